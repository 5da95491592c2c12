import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import { type ScalarRecord, isScalar, type TaskInput, type TrainerContext } from '../../../src/client/api.ts';
import {
  ExProcessTrainerHost,
  type ExProcessOptions,
  TrainerProcessError,
  TrainerTaskError,
} from '../../../src/client/host/process-host.ts';
import {
  ClientMessageSchema,
  ControlMessageSchema,
  FrameError,
  FrameReader,
  FrameWriter,
  InvalidMessageError,
  MAX_JSON_BYTES,
  TrainerMessageSchema,
  aligned,
  writeFrame,
} from '../../../src/client/framing.ts';
import { f16ToF32 } from '../../../src/core/dtypes.ts';
import { type FLModel, flModel } from '../../../src/core/fl-model.ts';
import { type Tensor, type TensorDict, f32, tensor, tensorBytes } from '../../../src/core/tensor.ts';
import { sampleParams } from '../../fixtures/trainers/add-one-lib.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const trainers = path.join(repoRoot, 'test/fixtures/trainers');

function tsTrainer(file: string, extra: Partial<ExProcessOptions> = {}): ExProcessTrainerHost {
  return new ExProcessTrainerHost({
    command: process.execPath,
    args: ['--import', 'tsx', path.join(trainers, file)],
    cwd: repoRoot,
    ...extra,
  });
}

let workspace = '';
before(async () => {
  workspace = await mkdtemp(path.join(tmpdir(), 'flotilla-ws-'));
});
after(async () => {
  await rm(workspace, { recursive: true, force: true });
});

function ctx(metrics: ScalarRecord[] = []): TrainerContext {
  return { siteName: 'site-1', jobId: 'job-42', workspace, onMetric: (m) => void (isScalar(m) && metrics.push(m)) };
}

function task(i: number, params: TensorDict, taskName = 'train'): TaskInput {
  return {
    taskId: `t${i}`,
    taskName,
    model: flModel(params, { currentRound: i, totalRounds: 3, meta: { tag: `r${i}`, nested: { a: [1, 2] } }, metrics: { prev: i } }),
  };
}

describe('framing', () => {
  async function roundTrip(write: (w: FrameWriter) => Promise<void>): Promise<Array<{ type: string; params?: TensorDict }>> {
    const pipe = new PassThrough({ highWaterMark: 1024 }); // small buffer: exercises backpressure
    const reader = new FrameReader(pipe, ControlMessageSchema);
    const frames: Array<{ type: string; params?: TensorDict }> = [];
    const reading = (async () => {
      for (let f = await reader.next(); f; f = await reader.next())
        frames.push({ type: f.msg.type, ...(f.params ? { params: f.params } : {}) });
    })();
    await write(new FrameWriter(pipe, { chunkBytes: 4096 }));
    pipe.end();
    await reading;
    return frames;
  }

  it('round-trips control messages and params, in order, through a small pipe', async () => {
    const big = f32(
      [100_000],
      Array.from({ length: 100_000 }, (_, i) => i * 0.5),
    );
    const params = new Map([...sampleParams(), ['big', big]]);
    const frames = await roundTrip(async (w) => {
      const sends = [
        w.send({ type: 'receive' }),
        w.send(
          { type: 'result', taskId: 't', model: { paramsType: 'DIFF', metrics: { a: 1 }, meta: {}, currentRound: 1, totalRounds: 2 } },
          params,
        ),
        // queued behind the result's payload, never interleaved with it
        w.send({ type: 'log', key: 'loss', value: 0.5 }),
      ];
      await Promise.all(sends);
    });
    assert.deepEqual(
      frames.map((f) => f.type),
      ['receive', 'result', 'log'],
    );
    const got = frames[1]!.params!;
    assert.deepEqual([...got.keys()], ['w', 'h', 'steps', 'empty', 'big']);
    for (const [k, t] of params) {
      assert.equal(got.get(k)!.dtype, t.dtype);
      assert.deepEqual(got.get(k)!.shape, t.shape);
      assert.ok(Buffer.from(tensorBytes(got.get(k)!)).equals(Buffer.from(tensorBytes(t))), `tensor ${k} bytes differ`);
    }
  });

  it('reads frames however the bytes are chunked (property)', async () => {
    // one stream: a log, a result with mixed dtypes (odd-sized F16 before F32: unaligned layout), a receive
    const sink = new PassThrough({ highWaterMark: 1 << 24 });
    const parts: Buffer[] = [];
    sink.on('data', (d: Buffer) => parts.push(d));
    const params: TensorDict = new Map<string, Tensor>([
      ['h', tensor('F16', [3], Uint16Array.from([1, 2, 3]))],
      ['w', f32([5], [1.5, -2, 3, 4, 5])],
      ['i', tensor('I64', [2], BigInt64Array.from([1n, -1n]))],
    ]);
    const info = { paramsType: 'FULL' as const, metrics: {}, meta: { k: 'v' }, currentRound: 0, totalRounds: 1 };
    await writeFrame(sink, { type: 'log', key: 'k', value: 1 });
    await writeFrame(sink, { type: 'result', taskId: 'x', model: info }, params);
    await writeFrame(sink, { type: 'receive' });
    const bytes = Buffer.concat(parts);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }), async (cuts) => {
        const chunks: Buffer[] = [];
        for (let o = 0, k = 0; o < bytes.length; k++) {
          const n = cuts[k % cuts.length]!;
          chunks.push(bytes.subarray(o, o + n));
          o += n;
        }
        const reader = new FrameReader(
          (async function* () {
            yield* chunks;
          })(),
          TrainerMessageSchema,
        );
        const types: string[] = [];
        let got: TensorDict | undefined;
        for (let f = await reader.next(); f; f = await reader.next()) {
          types.push(f.msg.type);
          if (f.params) got = f.params;
        }
        assert.deepEqual(types, ['log', 'result', 'receive']);
        for (const [k, t] of params) assert.ok(Buffer.from(tensorBytes(got!.get(k)!)).equals(Buffer.from(tensorBytes(t))), k);
      }),
      { numRuns: 200 },
    );
  });

  it('aligned() keeps every chunk boundary on a multiple of 8 and loses no byte (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 30 }), { maxLength: 20 }), async (chunks) => {
        const out: Uint8Array[] = [];
        for await (const c of aligned(
          (async function* () {
            yield* chunks;
          })(),
        ))
          out.push(c);
        assert.ok(Buffer.concat(out).equals(Buffer.concat(chunks)));
        let pos = 0;
        out.forEach((c, i) => {
          pos += c.byteLength;
          if (i < out.length - 1) assert.equal(pos % 8, 0);
        });
      }),
      { numRuns: 300 },
    );
  });

  it('rejects bad magic with a clear error', async () => {
    const pipe = new PassThrough();
    pipe.end(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    await assert.rejects(
      new FrameReader(pipe, ControlMessageSchema).next(),
      (e: Error) => e instanceof FrameError && /bad frame magic: expected "FLT1", got 47 45 54 20 \("GET "\)/.test(e.message),
    );
  });

  function rawFrame(json: string | Buffer, payloadBytes = 0n, jsonLen?: number): Buffer {
    const body = typeof json === 'string' ? Buffer.from(json) : json;
    const p = Buffer.alloc(16);
    p.write('FLT1', 0, 'ascii');
    p.writeUInt32LE(jsonLen ?? body.byteLength, 4);
    p.writeBigUInt64LE(payloadBytes, 8);
    return Buffer.concat([p, body]);
  }

  it('refuses control parts over 16 MiB before reading them', async () => {
    const pipe = new PassThrough();
    pipe.end(rawFrame('', 0n, MAX_JSON_BYTES + 1));
    await assert.rejects(new FrameReader(pipe, ControlMessageSchema).next(), /control part is 16777217 bytes, over the limit of 16777216/);
  });

  it('names the bad field of an invalid message', async () => {
    const pipe = new PassThrough();
    pipe.end(rawFrame(JSON.stringify({ type: 'log', key: 'loss', value: true })));
    await assert.rejects(
      new FrameReader(pipe, TrainerMessageSchema).next(),
      (e: Error) => /type "log"/.test(e.message) && /value/.test(e.message),
    );
    const pipe2 = new PassThrough();
    pipe2.end(rawFrame(JSON.stringify({ type: 'task', taskId: 'x', taskName: 'train', model: {} })));
    await assert.rejects(new FrameReader(pipe2, TrainerMessageSchema).next(), /invalid control message \(type "task"\)/);
  });

  it('rejects a payload on a frame that carries none, truncated frames and a payload/header size mismatch', async () => {
    const a = new PassThrough();
    a.end(rawFrame(JSON.stringify({ type: 'receive' }), 10n));
    await assert.rejects(
      new FrameReader(a, TrainerMessageSchema).next(),
      /"receive" frame carries no payload, but its prefix declares 10 bytes/,
    );

    const b = new PassThrough();
    b.end(rawFrame(JSON.stringify({ type: 'receive' })).subarray(0, 20));
    await assert.rejects(new FrameReader(b, TrainerMessageSchema).next(), /connection closed after \d+ of 18 bytes of a control message/);

    // a valid safetensors stream, but the frame declares 8 more bytes than it holds
    const c = new PassThrough();
    const reader = new FrameReader(c, ClientMessageSchema);
    const writing = writeFrame(
      c,
      {
        type: 'task',
        taskId: 't',
        taskName: 'train',
        model: { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: 0, totalRounds: 1 },
      },
      new Map([['x', f32([2], [1, 2])]]),
    );
    const chunks: Buffer[] = [];
    c.on('data', (d: Buffer) => chunks.push(d));
    await writing;
    const frame = Buffer.concat(chunks);
    frame.writeBigUInt64LE(frame.readBigUInt64LE(8) + 8n, 8);
    const d = new PassThrough();
    d.end(Buffer.concat([frame, Buffer.alloc(8)]));
    await assert.rejects(new FrameReader(d, ClientMessageSchema).next(), /is \d+ bytes, but its safetensors header declares \d+/);
    void reader;
  });

  it('refuses to send an invalid message before writing a byte', async () => {
    const pipe = new PassThrough();
    await assert.rejects(writeFrame(pipe, { type: 'log', key: 'loss', value: Number.NaN }), InvalidMessageError);
    await assert.rejects(writeFrame(pipe, { type: 'receive' }, new Map()), /carries no params/);
    assert.equal(pipe.readableLength, 0);
  });
});

describe('ExProcessTrainerHost', () => {
  it('runs the add-one trainer as a child: values, dtypes, meta, metrics, log; stop() ends it with code 0', async () => {
    const metrics: ScalarRecord[] = [];
    const lines: string[] = [];
    const host = tsTrainer('add-one.ts', { logger: (l, s) => lines.push(`${s}: ${l}`) });
    await host.start(ctx(metrics));
    const dir = host.socketDirectory!;
    assert.ok(existsSync(dir));
    let params = sampleParams();
    for (let i = 0; i < 3; i++) {
      const r = await host.runTask(task(i, params));
      assert.equal(r.currentRound, i);
      assert.equal(r.totalRounds, 3);
      assert.equal(r.paramsType, 'FULL');
      assert.deepEqual(r.metrics, { round: i, tensors: 4 });
      assert.deepEqual(r.meta, {
        tag: `r${i}`,
        nested: { a: [1, 2] },
        site: 'site-1',
        job: 'job-42',
        task: 'train',
        isTrain: true,
        isEvaluate: false,
        NUM_STEPS_CURRENT_ROUND: 7,
      });
      params = r.params;
    }
    assert.deepEqual([...(params.get('w')!.data as Float32Array)], [3, 4, 5, 0, 3.25, 1e6 + 3]);
    assert.equal(params.get('h')!.dtype, 'F16');
    assert.deepEqual([...(params.get('h')!.data as Uint16Array)].map(f16ToF32), [3.5, 4.5, 1, 103]);
    assert.equal(params.get('steps')!.dtype, 'I64');
    assert.deepEqual([...(params.get('steps')!.data as BigInt64Array)], [8n, -4n]);
    assert.deepEqual(params.get('empty')!.shape, [0]);
    // log frames precede the result on the wire, so they are in by now
    assert.deepEqual(
      metrics.map((m) => [m.site, m.key, m.value, m.round, m.step]),
      [
        ['site-1', 'loss', 1, 0, 0],
        ['site-1', 'loss', 0.5, 1, 1],
        ['site-1', 'loss', 1 / 3, 2, 2],
      ],
    );
    const v = await host.runTask(task(3, params, 'validate'));
    assert.equal(v.meta.task, 'validate');
    assert.equal(v.meta.isEvaluate, true);
    await assert.rejects(host.runTask(task(4, params), AbortSignal.abort(new Error('aborted early'))), /aborted early/);

    await host.stop();
    assert.deepEqual(host.exitStatus, { code: 0, signal: null });
    assert.ok(lines.includes('stdout: add-one trainer: done'), `child output: ${lines.join(' | ')}`);
    assert.equal(existsSync(dir), false, 'socket dir removed');
    await assert.rejects(host.runTask(task(5, params)), /stop/);
  });

  it('a trainer that exits mid-task fails the task quickly with the exit code and its stderr', async () => {
    const host = tsTrainer('crash.ts');
    await host.start(ctx());
    const t0 = Date.now();
    await assert.rejects(host.runTask(task(0, sampleParams())), (e: Error) => {
      assert.ok(e instanceof TrainerProcessError);
      assert.match(e.message, /exited with code 3 while task "t0" \(train\) was pending/);
      assert.match(e.message, /CRASH-MARKER-7f3a/);
      assert.equal(e.exit?.code, 3);
      return true;
    });
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    await assert.rejects(host.runTask(task(1, sampleParams())), /exited with code 3/);
    await host.stop();
  });

  it('an uncaught exception in the trainer puts its stack (stderr tail) in the error', async () => {
    const host = tsTrainer('throws.ts');
    await host.start(ctx());
    await assert.rejects(host.runTask(task(0, sampleParams())), (e: Error) => {
      assert.match(e.message, /exited with code 1 while task "t0"/);
      assert.match(e.message, /UNCAUGHT-MARKER-91b2/);
      assert.match(e.message, /throws\.ts/);
      return true;
    });
    await host.stop();
  });

  it('a `failed` frame rejects that task with message and traceback; the trainer takes the next task', async () => {
    const host = tsTrainer('fails.ts');
    await host.start(ctx());
    await assert.rejects(host.runTask(task(0, sampleParams())), (e: Error) => {
      assert.ok(e instanceof TrainerTaskError);
      assert.match(e.message, /task "t0" \(train\) failed in the trainer: FAILED-MARKER-c0de: loss diverged/);
      assert.match(e.traceback ?? '', /fails\.ts/);
      assert.match(e.message, /fails\.ts/);
      return true;
    });
    const r = await host.runTask(task(1, sampleParams()));
    assert.deepEqual([...(r.params.get('w')!.data as Float32Array)], [0, 1, 2, -3, 0.25, 1e6]);
    await host.stop();
    assert.equal(host.exitStatus?.code, 0);
  });

  it('runTrainer() reports a throwing Trainer function as a failed task, then the process exits 1', async () => {
    const host = tsTrainer('run-trainer-throws.ts');
    await host.start(ctx());
    await assert.rejects(
      host.runTask(task(0, sampleParams())),
      (e: Error) => e instanceof TrainerTaskError && /THROWN-IN-TRAINER-5e11/.test(e.message),
    );
    await assert.rejects(host.runTask(task(1, sampleParams())), /exited with code 1/);
    await host.stop();
  });

  it('protocol mismatch: start() fails naming both versions and the trainer gets an `error` frame', async () => {
    const lines: string[] = [];
    const host = tsTrainer('mismatch.ts', { logger: (l) => lines.push(l) });
    await assert.rejects(host.start(ctx()), /trainer speaks protocol 2, client speaks 1/);
    assert.ok(lines.includes('GOT error: trainer speaks protocol 2, client speaks 1'), `child output: ${lines.join(' | ')}`);
    assert.equal(host.exitStatus?.code, 0);
    await assert.rejects(host.runTask(task(0, sampleParams())), /trainer speaks protocol 2/);
    await host.stop();
  });

  it('a trainer that never connects times out, and is killed', async () => {
    const host = tsTrainer('silent.ts', { helloTimeoutMs: 2500 });
    const t0 = Date.now();
    await assert.rejects(host.start(ctx()), /did not connect within 2500 ms/);
    assert.ok(Date.now() - t0 < 8000);
    assert.equal(host.exitStatus?.signal, 'SIGKILL');
    await assert.rejects(host.runTask(task(0, sampleParams())), /did not connect/);
    await host.stop();
  });

  it('stop() kills a trainer that does not exit in time, failing its pending task', async () => {
    let busy: () => void = () => {};
    const working = new Promise<void>((r) => (busy = r));
    const host = tsTrainer('hang.ts', { stopTimeoutMs: 500, logger: (l) => l.startsWith('HANG-MARKER') && busy() });
    await host.start(ctx());
    const pending = host.runTask(task(0, sampleParams()));
    const failed = assert.rejects(pending, /was killed by signal SIGKILL while task "t0" \(train\) was pending[^]*HANG-MARKER/);
    await working; // the trainer holds the task
    const t0 = Date.now();
    await host.stop();
    assert.ok(Date.now() - t0 < 4000);
    assert.equal(host.exitStatus?.signal, 'SIGKILL');
    await failed;
  });

  it('a command that cannot be started fails start() clearly', async () => {
    const host = new ExProcessTrainerHost({ command: path.join(workspace, 'no-such-trainer'), args: [] });
    await assert.rejects(host.start(ctx()), /could not start trainer ".*no-such-trainer": spawn .* ENOENT/);
    await host.stop();
  });

  it('round-trips a 64 MiB model through the socket, byte for byte', async (t) => {
    const host = tsTrainer('echo.ts');
    await host.start(ctx());
    const n = 16 * 1024 * 1024; // 64 MiB of F32
    const data = new Float32Array(n);
    randomFillSync(new Uint8Array(data.buffer)); // any bit pattern, NaN payloads included, must survive
    const params: TensorDict = new Map([
      ['big', tensor('F32', [4096, 4096], data)],
      ['small', f32([3], [1, 2, 3])],
    ]);
    const t0 = performance.now();
    const r: FLModel = await host.runTask(task(0, params));
    const ms = performance.now() - t0;
    assert.ok(Buffer.from(tensorBytes(r.params.get('big')!)).equals(Buffer.from(tensorBytes(params.get('big')!))));
    assert.deepEqual(r.params.get('big')!.shape, [4096, 4096]);
    assert.deepEqual([...(r.params.get('small')!.data as Float32Array)], [1, 2, 3]);
    const mib = (2 * 64) / (ms / 1000);
    t.diagnostic(`64 MiB round trip (host→child→host): ${ms.toFixed(0)} ms, ${mib.toFixed(0)} MiB/s over the socket`);
    console.log(`64 MiB round trip: ${ms.toFixed(0)} ms`);
    await host.stop();
  });
});
