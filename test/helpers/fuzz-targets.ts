/**
 * Fuzz targets: every parser of input that crosses a trust boundary, each with an input generator
 * (valid inputs, then mutated) and a run that feeds the parser. A run returns when the parser
 * accepted the input or refused it with its own typed error; anything else it throws (a TypeError,
 * a RangeError, a stack overflow, an error class the callers do not expect) is a finding.
 * test/unit/util/fuzz.test.ts runs each for a few hundred cases, scripts/fuzz.ts for as many as asked.
 */
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { DTYPES } from '../../src/core/dtypes.ts';
import { SafetensorsError, SafetensorsFile } from '../../src/core/safetensors.ts';
import { buildHeader, parseHeader, readHeaderLength } from '../../src/core/safetensors-header.ts';
import { decodeStream } from '../../src/core/tensor-stream.ts';
import { FrameDecoder, type WireItem, decodeFrame, encodeFrame } from '../../src/transport/codec.ts';
import { decodeEnvelope } from '../../src/streaming/protocol.ts';
import { ClientMessageSchema, ServerMessageSchema } from '../../src/runtime/messages.ts';
import { ServerToSite, SiteToServer } from '../../src/deploy/session.ts';
import {
  ClientMessageSchema as ToTrainer,
  type ControlMessage,
  FrameError,
  FrameReader,
  TrainerMessageSchema as FromTrainer,
  writeFrame,
} from '../../src/client/framing.ts';
import { BundleError, packJob, unpackJob } from '../../src/deploy/job-bundle.ts';
import { JobConfigError, readJobConfig } from '../../src/runtime/job-config.ts';
import { ProjectError, readProject } from '../../src/provision/project.ts';
import { MAX_FRAME_BYTES } from '../../src/util/limits.ts';

export interface FuzzTarget {
  readonly name: string;
  /** the parser's own errors: what a run may throw */
  readonly accepts: readonly (abstract new (...a: never[]) => Error)[];
  readonly arbitrary: fc.Arbitrary<unknown>;
  run(input: unknown): Promise<void>;
}

// ---- mutations -------------------------------------------------------------------------------

/** Lengths and counts that break parsers: zero, one, the sign bits, the limits and just past them. */
const INTERESTING = [
  0,
  1,
  7,
  8,
  0x7f,
  0x80,
  0xff,
  0x7fff,
  0xffff,
  0x7fffffff,
  0x80000000,
  0xffffffff,
  MAX_FRAME_BYTES,
  MAX_FRAME_BYTES + 1,
];

type ByteOp =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'u32'; at: number; value: number }
  | { op: 'u64'; at: number; hi: number; lo: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; n: number }
  | { op: 'repeat'; at: number; n: number; times: number }
  | { op: 'truncate'; at: number };

const at = fc.nat();
const byteOp: fc.Arbitrary<ByteOp> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at, value: fc.oneof(fc.constantFrom(0, 0xff, 0x7f, 0x80, 0x22, 0x5c, 0x7b), fc.nat(255)) }),
  fc.record({ op: fc.constant('u32' as const), at, value: fc.oneof(fc.constantFrom(...INTERESTING), fc.nat()) }),
  fc.record({
    op: fc.constant('u64' as const),
    at,
    hi: fc.constantFrom(0, 1, 0x1fffff, 0x200000, 0xffffffff),
    lo: fc.constantFrom(...INTERESTING),
  }),
  fc.record({ op: fc.constant('insert' as const), at, bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }) }),
  fc.record({ op: fc.constant('delete' as const), at, n: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ op: fc.constant('repeat' as const), at, n: fc.integer({ min: 1, max: 32 }), times: fc.integer({ min: 2, max: 64 }) }),
  fc.record({ op: fc.constant('truncate' as const), at }),
);

export function mutateBytes(base: Uint8Array, ops: readonly ByteOp[]): Buffer {
  let b = Buffer.from(base);
  for (const o of ops) {
    const i = b.byteLength === 0 ? 0 : o.at % b.byteLength;
    switch (o.op) {
      case 'flip':
        if (b.byteLength > 0) b[i] = b[i]! ^ (1 << o.bit);
        break;
      case 'set':
        if (b.byteLength > 0) b[i] = o.value;
        break;
      case 'u32':
        if (b.byteLength >= 4) b.writeUInt32LE(o.value >>> 0, Math.min(i, b.byteLength - 4));
        break;
      case 'u64':
        if (b.byteLength >= 8) {
          const j = Math.min(i, b.byteLength - 8);
          b.writeUInt32LE(o.lo >>> 0, j);
          b.writeUInt32LE(o.hi >>> 0, j + 4);
        }
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, i), o.bytes, b.subarray(i)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, i), b.subarray(i + o.n)]);
        break;
      case 'repeat': {
        const piece = b.subarray(i, i + o.n);
        b = Buffer.concat([b.subarray(0, i), ...Array.from({ length: o.times }, () => piece), b.subarray(i + o.n)]);
        break;
      }
      case 'truncate':
        b = b.subarray(0, i);
        break;
    }
  }
  return b;
}

/** A valid input, a mutated one (most cases), or plain random bytes. */
function mutatedBytes(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 1, arbitrary: valid.map((v) => Buffer.from(v)) },
    { weight: 6, arbitrary: fc.tuple(valid, fc.array(byteOp, { minLength: 1, maxLength: 6 })).map(([v, ops]) => mutateBytes(v, ops)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((u) => Buffer.from(u)) },
  );
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

type JsonOp =
  | { op: 'replace'; at: number; value: unknown }
  | { op: 'delete'; at: number }
  | { op: 'add'; at: number; key: string; value: unknown }
  | { op: 'deep'; at: number; depth: number; array: boolean };

const oddValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(
    -1,
    0,
    1.5,
    2 ** 53,
    -(2 ** 53),
    1e308,
    -0,
    0xffffffff,
    0x100000000,
    '',
    '..',
    '../../etc/passwd',
    '/abs',
    'a\\b',
    '\u0000',
    '__proto__',
  ),
  fc.string({ unit: 'binary', maxLength: 40 }),
);
const jsonOp: fc.Arbitrary<JsonOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('replace' as const), at, value: oddValue }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), at }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('add' as const),
      at,
      key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'type', 'extra'), fc.string({ maxLength: 8 })),
      value: oddValue,
    }),
  },
  // nesting deep enough to overflow a recursive validator's stack
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('deep' as const), at, depth: fc.constantFrom(65, 200, 5_000), array: fc.boolean() }),
  },
);

const DEEP = '\u0000deep:';

/** JSON text of a mutated value, with each deep-nesting marker written out as that many brackets. */
export function jsonText(v: unknown): string {
  const text = JSON.stringify(v) ?? 'null';
  return text.replace(/"\\u0000deep:([[{])(\d+)"/g, (_m, open: string, n: string) =>
    open === '[' ? '['.repeat(Number(n)) + '0' + ']'.repeat(Number(n)) : '{"a":'.repeat(Number(n)) + '0' + '}'.repeat(Number(n)),
  );
}

/** Applies structural edits to a JSON value (the value at position `at` of a depth-first walk). */
export function mutateJson(base: unknown, ops: readonly JsonOp[]): unknown {
  let root = structuredClone(base) as Json;
  for (const o of ops) {
    const slots: { parent: Json[] | Record<string, Json> | null; key: string | number }[] = [{ parent: null, key: 0 }];
    const walk = (v: Json): void => {
      if (Array.isArray(v))
        v.forEach((x, i) => {
          slots.push({ parent: v, key: i });
          walk(x);
        });
      else if (v !== null && typeof v === 'object')
        for (const k of Object.keys(v)) {
          slots.push({ parent: v, key: k });
          walk(v[k]!);
        }
    };
    walk(root);
    const s = slots[o.at % slots.length]!;
    const get = (): Json => (s.parent === null ? root : (s.parent as Record<string, Json>)[s.key]!);
    const set = (v: Json): void => {
      if (s.parent === null) root = v;
      else Object.defineProperty(s.parent, s.key, { value: v, enumerable: true, writable: true, configurable: true });
    };
    switch (o.op) {
      case 'replace':
        set(o.value as Json);
        break;
      case 'delete':
        if (s.parent === null) root = null;
        else if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
        else delete s.parent[s.key];
        break;
      case 'add': {
        const v = get();
        if (v !== null && typeof v === 'object' && !Array.isArray(v))
          Object.defineProperty(v, o.key, { value: o.value, enumerable: true, writable: true, configurable: true });
        else set({ [o.key]: o.value as Json });
        break;
      }
      case 'deep':
        // JSON.stringify recurses too: the nesting is written into the text by jsonText
        set(`${DEEP}${o.array ? '[' : '{'}${o.depth}`);
        break;
    }
  }
  return root;
}

/** A JSON text: a valid object, one edited structurally, its text mutated byte-wise, or random text. */
function mutatedJsonText(valid: fc.Arbitrary<unknown>): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 1, arbitrary: valid.map((v) => JSON.stringify(v)) },
    {
      weight: 5,
      arbitrary: fc.tuple(valid, fc.array(jsonOp, { minLength: 1, maxLength: 4 })).map(([v, ops]) => jsonText(mutateJson(v, ops))),
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(valid, fc.array(byteOp, { minLength: 1, maxLength: 4 }))
        .map(([v, ops]) => mutateBytes(Buffer.from(JSON.stringify(v)), ops).toString('utf8')),
    },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  );
}

/** Splits bytes into reads at the given sizes (a socket cuts a stream anywhere). */
function* reads(b: Buffer, cuts: readonly number[]): Generator<Buffer> {
  let i = 0;
  for (let off = 0; off < b.byteLength; i++) {
    const n = cuts.length === 0 ? b.byteLength : cuts[i % cuts.length]!;
    yield b.subarray(off, off + n);
    off += n;
  }
}
async function* asyncReads(b: Buffer, cuts: readonly number[]): AsyncGenerator<Buffer> {
  for (const r of reads(b, cuts)) yield r;
}
const cutsArb = fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 6 });

// ---- seeds: valid inputs -----------------------------------------------------------------------

const tensorName = fc.oneof(fc.constantFrom('w', 'b', 'layer.0.weight', '__proto__'), fc.string({ minLength: 1, maxLength: 6 }));
const tensorList = fc.uniqueArray(
  fc.record({ name: tensorName, dtype: fc.constantFrom(...DTYPES), shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }) }),
  { selector: (t) => t.name, maxLength: 4 },
);
const metadata = fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 10 }), { maxKeys: 3 });

/** A whole safetensors file: header, then the data it declares. */
const safetensorsBytes: fc.Arbitrary<Uint8Array> = fc.tuple(tensorList, metadata, fc.nat(255)).map(([tensors, meta, fill]) => {
  const { bytes, header } = buildHeader(
    tensors.filter((t) => t.name !== '__metadata__'),
    meta,
  );
  return Buffer.concat([bytes, Buffer.alloc(header.dataBytes, fill)]);
});

const streamId = fc.integer({ min: 1, max: 0xffffffff });
const count = fc.maxSafeInteger().filter((n) => n >= 0);
const wireItem: fc.Arbitrary<WireItem> = fc.oneof(
  fc.record({ type: fc.constant('control' as const), json: fc.string({ maxLength: 100 }) }),
  fc.record(
    {
      type: fc.constant('data' as const),
      stream: streamId,
      bytes: fc.uint8Array({ maxLength: 300 }),
      last: fc.boolean(),
      offset: count,
      hash: fc.stringMatching(/^[0-9a-f]{16}$/),
      digest: fc.stringMatching(/^[0-9a-f]{16}$/),
    },
    { requiredKeys: ['type', 'stream', 'bytes', 'last'] },
  ),
  fc.record({ type: fc.constant('ack' as const), stream: streamId, bytes: count }),
  fc.record({ type: fc.constant('resend' as const), stream: streamId, offset: count }),
  fc.record({ type: fc.constant('cancel' as const), stream: streamId, reason: fc.string({ maxLength: 50 }) }),
  fc.record({ type: fc.constant('hello' as const), json: fc.string({ maxLength: 50 }) }),
  fc.constant({ type: 'welcome' as const }),
  fc.record({ type: fc.constant('refuse' as const), reason: fc.string({ maxLength: 50 }) }),
);
const frameBytes = fc.array(wireItem, { minLength: 1, maxLength: 5 }).map((fs) => Buffer.concat(fs.flatMap((f) => encodeFrame(f))));

const info = {
  paramsType: 'FULL',
  metrics: { loss: 0.5 },
  meta: { NUM_STEPS_CURRENT_ROUND: 10, note: ['x', { y: 1 }] },
  currentRound: 2,
  totalRounds: 5,
};
const channelSeeds = [
  { channel: { type: 'resume', control: 3, streams: [{ id: 1, received: 10, consumed: 5, state: 'open' }] } },
  { channel: { type: 'cack', control: 7 } },
  { channel: { type: 'close', reason: 'done' } },
  { msg: { type: 'task', taskId: 't1' }, stream: { id: 4, window: 65536, bytes: 1000 } },
  { msg: { anything: [1, 2, 3] } },
];
const runtimeSeeds = [
  { type: 'register', site: 'site-1', protocol: 1 },
  { type: 'heartbeat' },
  { type: 'result', taskId: 'r1-site-1', status: 'ok', info, hasParams: true },
  { type: 'result', taskId: 'r1-site-1', status: 'error', error: 'boom' },
  { type: 'metric', key: 'loss', value: 0.25, step: 3, round: 1 },
  { type: 'registered', site: 'site-1', jobId: 'job-1' },
  { type: 'task', taskId: 't', taskName: 'train', info, hasParams: false },
  { type: 'end', reason: 'finished' },
];
const sessionSeeds = [
  { type: 'hello', site: 'site-1', protocol: 1 },
  { type: 'heartbeat', runningJobs: ['job-1', 'job-2'] },
  { type: 'job_failed', jobId: 'job-1', error: 'x' },
  { type: 'welcome', site: 'site-1', heartbeatSeconds: 10, dataPort: 8003 },
  { type: 'deploy', jobId: 'job-1', siteIndex: 0, numSites: 3 },
  { type: 'shutdown', reason: 'bye' },
];

/** Bytes written to a stream, collected. */
async function encodeExFrames(msgs: readonly { msg: ControlMessage; params?: Map<string, never> }[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      parts.push(c);
      cb();
    },
  });
  for (const m of msgs) await writeFrame(sink, m.msg, m.params);
  return Buffer.concat(parts);
}
const tensor = { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) };
const exSeedsFrom = await encodeExFrames([
  { msg: { type: 'hello', protocol: 1, language: 'python', pid: 42 } },
  { msg: { type: 'receive' } },
  { msg: { type: 'log', key: 'loss', value: 0.5, step: 1 } },
  { msg: { type: 'result', taskId: 't1', model: info as never }, params: new Map([['w', tensor]]) as never },
  { msg: { type: 'failed', message: 'x', traceback: 'tb' } },
]);
const exSeedsTo = await encodeExFrames([
  { msg: { type: 'welcome', protocol: 1, siteName: 'site-1', jobId: 'job-1' } },
  { msg: { type: 'task', taskId: 't1', taskName: 'train', model: info as never }, params: new Map([['w', tensor]]) as never },
  { msg: { type: 'error', message: 'x' } },
  { msg: { type: 'stop', reason: 'done' } },
]);
/** Valid frame sequences: any slice of whole frames of the seed streams. */
function exFrames(seed: Buffer): fc.Arbitrary<Uint8Array> {
  const bounds: number[] = [0];
  for (let off = 0; off < seed.byteLength;) {
    off += 16 + seed.readUInt32LE(off + 4) + Number(seed.readBigUInt64LE(off + 8));
    bounds.push(off);
  }
  return fc
    .tuple(fc.nat(bounds.length - 2), fc.nat(bounds.length - 1))
    .map(([a, b]) => seed.subarray(bounds[Math.min(a, b)], bounds[Math.max(a + 1, b)]));
}

const jobConfig = {
  name: 'fuzz-job',
  minClients: 2,
  model: { module: 'model.ts', export: 'initialModel' },
  workflows: [{ type: 'fedavg', rounds: 3 }, { type: 'cross_site_eval' }],
  executor: { trainer: { module: 'trainer.ts', factory: 'createTrainer', args: { epochs: 1 } } },
  filters: [],
};
const project = {
  name: 'fuzz',
  participants: [
    { type: 'server', name: 'server', org: 'org', host: 'localhost', port: 8002 },
    { type: 'client', name: 'site-1', org: 'org' },
    { type: 'admin', name: 'admin@org', org: 'org', role: 'project_admin' },
  ],
};

// ---- targets -----------------------------------------------------------------------------------

let scratch: string | null = null;
/** One scratch folder per process for the targets that need files (removed by cleanupFuzz). */
function dir(): string {
  scratch ??= mkdtempSync(join(tmpdir(), 'flotilla-fuzz-'));
  return scratch;
}
export function cleanupFuzz(): void {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  scratch = null;
}

function schemaTarget(name: string, schemas: readonly { safeParse(v: unknown): unknown }[], seeds: readonly unknown[]): FuzzTarget {
  return {
    name,
    accepts: [],
    arbitrary: mutatedJsonText(fc.constantFrom(...seeds)),
    async run(input) {
      let v: unknown;
      try {
        v = JSON.parse(input as string);
      } catch {
        return; // the channel refuses non-JSON before a schema sees it
      }
      for (const s of schemas) s.safeParse(v);
    },
  };
}

/** Every file under `root`, as relative paths; throws if any entry is not a regular file or folder. */
function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) out.push(relative(root, p));
      else throw new Error(`unpacking created ${relative(root, p)}, which is not a regular file`);
    }
  };
  walk(root);
  return out.sort();
}

const bundlePath = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('job.json', 'model.ts', 'trainer.ts', 'lib/util.ts', 'data/a.bin') },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '../escape',
      '/etc/passwd',
      'a/../../escape',
      'a/./b',
      'a//b',
      'a\\..\\b',
      'x\u0000y',
      '.',
      '..',
      '',
      `${'n'.repeat(300)}`,
      `a/${'d/'.repeat(300)}f`,
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
);
const bundle = fc
  .tuple(
    fc.array(fc.record({ path: bundlePath, data: fc.oneof(fc.constant(JSON.stringify(jobConfig)), fc.string({ maxLength: 40 })) }), {
      maxLength: 6,
    }),
    fc.array(jsonOp, { maxLength: 2 }),
  )
  .map(([files, ops]) => ({ files: files.map((f) => ({ path: f.path, base64: Buffer.from(f.data).toString('base64') })), ops }))
  .map(({ files, ops }) =>
    mutateJson({ files: [{ path: 'job.json', base64: Buffer.from(JSON.stringify(jobConfig)).toString('base64') }, ...files] }, ops),
  );

/** A job folder to pack: files, folders and symbolic links pointing inside, outside or nowhere. */
const packTree = fc.array(
  fc.record({
    path: fc.constantFrom('job.json', 'a.ts', 'sub/b.ts', 'sub/deeper/c.ts', 'link', 'sub/link2'),
    kind: fc.constantFrom('file', 'file', 'link-in', 'link-out', 'link-dir', 'link-broken', 'link-loop'),
  }),
  { maxLength: 6 },
);

export const TARGETS: readonly FuzzTarget[] = [
  {
    name: 'safetensors-header',
    accepts: [SafetensorsError],
    arbitrary: mutatedBytes(safetensorsBytes),
    async run(input) {
      const b = input as Buffer;
      const len = readHeaderLength(b.subarray(0, 8), b.byteLength);
      parseHeader(b.subarray(8, 8 + len), b.byteLength);
    },
  },
  {
    name: 'safetensors-file',
    accepts: [SafetensorsError],
    arbitrary: mutatedBytes(safetensorsBytes),
    async run(input) {
      const path = join(dir(), 'fuzz.safetensors');
      writeFileSync(path, input as Buffer);
      const f = await SafetensorsFile.open(path);
      try {
        await f.readAll();
      } finally {
        await f.close();
      }
    },
  },
  {
    name: 'safetensors-stream',
    accepts: [SafetensorsError],
    arbitrary: fc.tuple(mutatedBytes(safetensorsBytes), cutsArb),
    async run(input) {
      const [b, cuts] = input as [Buffer, number[]];
      const s = await decodeStream(asyncReads(b, cuts), { maxBytes: 1 << 20 });
      for await (const _ of s.pieces());
    },
  },
  {
    name: 'frame-codec',
    accepts: [],
    arbitrary: fc.tuple(mutatedBytes(frameBytes), cutsArb),
    async run(input) {
      const [b, cuts] = input as [Buffer, number[]];
      const d = new FrameDecoder();
      for (const r of reads(b, cuts)) {
        const got = d.push(r);
        if (typeof got === 'string') break; // the connection ends here
        if (d.buffered > MAX_FRAME_BYTES + r.byteLength) throw new Error(`decoder holds ${d.buffered} bytes`);
      }
      decodeFrame(b);
    },
  },
  {
    name: 'channel-envelope',
    accepts: [],
    arbitrary: mutatedJsonText(fc.constantFrom(...channelSeeds)),
    async run(input) {
      decodeEnvelope(input as string);
    },
  },
  schemaTarget('runtime-messages', [ClientMessageSchema, ServerMessageSchema], runtimeSeeds),
  schemaTarget('session-messages', [SiteToServer, ServerToSite], sessionSeeds),
  {
    name: 'ex-process-from-trainer',
    accepts: [FrameError],
    arbitrary: fc.tuple(mutatedBytes(exFrames(exSeedsFrom)), cutsArb),
    async run(input) {
      const [b, cuts] = input as [Buffer, number[]];
      const r = new FrameReader(asyncReads(b, cuts), FromTrainer);
      while (await r.next());
    },
  },
  {
    name: 'ex-process-to-trainer',
    accepts: [FrameError],
    arbitrary: fc.tuple(mutatedBytes(exFrames(exSeedsTo)), cutsArb),
    async run(input) {
      const [b, cuts] = input as [Buffer, number[]];
      const r = new FrameReader(asyncReads(b, cuts), ToTrainer);
      while (await r.next());
    },
  },
  {
    name: 'job-bundle-unpack',
    accepts: [BundleError, JobConfigError],
    arbitrary: fc.oneof(
      { weight: 4, arbitrary: bundle.map((v) => Buffer.from(jsonText(v))) },
      { weight: 1, arbitrary: mutatedBytes(fc.constant(Buffer.from(JSON.stringify({ files: [] })))) },
    ),
    async run(input) {
      const root = join(dir(), 'unpack');
      rmSync(root, { recursive: true, force: true });
      mkdirSync(root);
      const dest = join(root, 'jobs', 'job');
      let refused: Error | null = null;
      try {
        unpackJob(input as Buffer, dest, 4096);
      } catch (e) {
        refused = e as Error;
      }
      // accepted or refused: nothing lands outside dest, and only regular files inside it
      const outside = listTree(root).filter((p) => !p.startsWith(join('jobs', 'job') + '/'));
      if (outside.length > 0) throw new Error(`unpacking wrote outside the job folder: ${outside.join(', ')}`);
      if (refused !== null) throw refused;
    },
  },
  {
    name: 'job-bundle-pack',
    accepts: [BundleError],
    arbitrary: fc.tuple(packTree, fc.boolean()),
    async run(input) {
      const [tree, followLinks] = input as [{ path: string; kind: string }[], boolean];
      const root = join(dir(), 'pack');
      rmSync(root, { recursive: true, force: true });
      const job = join(root, 'job');
      mkdirSync(join(job, 'sub', 'deeper'), { recursive: true });
      writeFileSync(join(root, 'secret.txt'), 'outside');
      writeFileSync(join(job, 'job.json'), JSON.stringify(jobConfig));
      const { symlinkSync } = await import('node:fs');
      for (const t of tree) {
        const p = join(job, t.path);
        rmSync(p, { force: true, recursive: true });
        if (t.kind === 'file') writeFileSync(p, 'x');
        else if (t.kind === 'link-in') symlinkSync(join(job, 'job.json'), p);
        else if (t.kind === 'link-out') symlinkSync(join(root, 'secret.txt'), p);
        else if (t.kind === 'link-dir') symlinkSync(join(job, 'sub'), p);
        else if (t.kind === 'link-broken') symlinkSync(join(job, 'nowhere'), p);
        else symlinkSync(p, p);
      }
      const packed = JSON.parse(Buffer.from(packJob(job, { followLinks })).toString('utf8')) as { files: { base64: string }[] };
      if (packed.files.some((f) => Buffer.from(f.base64, 'base64').toString() === 'outside'))
        throw new Error('a file outside the job folder was packed');
    },
  },
  {
    name: 'job-config',
    accepts: [JobConfigError],
    arbitrary: fc.tuple(mutatedJsonText(fc.constant(jobConfig)), fc.boolean()),
    async run(input) {
      const [text, asYaml] = input as [string, boolean];
      const d = join(dir(), 'config');
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d);
      // JSON is YAML too: the same text under job.yaml exercises the YAML parser
      writeFileSync(join(d, asYaml ? 'job.yaml' : 'job.json'), text);
      readJobConfig(d);
    },
  },
  {
    name: 'project-yml',
    accepts: [ProjectError],
    arbitrary: fc.oneof(
      mutatedJsonText(fc.constant(project)),
      fc.constantFrom('a: &a [*a]', 'x: !!binary zz', `${'- '.repeat(5000)}x`, 'a: &a [1]\nb: [*a,*a,*a,*a,*a,*a,*a,*a,*a]', '? [a]\n: b'),
    ),
    async run(input) {
      const f = join(dir(), 'project.yml');
      writeFileSync(f, input as string);
      readProject(f);
    },
  },
];

/** Runs one case: resolves if the parser accepted or refused the input with its typed error. */
export async function runCase(t: FuzzTarget, input: unknown): Promise<void> {
  try {
    await t.run(input);
  } catch (e) {
    if (t.accepts.some((c) => e instanceof c)) return;
    throw e;
  }
}
