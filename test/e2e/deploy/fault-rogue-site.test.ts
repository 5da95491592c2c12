// A server fuzzed by a site it authenticates: site-3 holds a valid kit (its certificate signed by the
// project CA) and keeps a proper session, so the job is deployed to it and waits for it to join, while two
// honest site processes (site-1, site-2; mutual TLS on loopback) run the job. On other connections, one at a
// time, site-3 sends what no honest site sends: malformed and oversized results, payload pieces out of order
// and under a size declared in terabytes, frames of streams never announced, garbage JSON and unknown
// message types, channel messages that break the protocol, a control message over the limit, a frame whose
// length prefix says 4 GiB and a frame of an unknown type on the data plane, second and impersonating
// sessions, and hellos for what the data plane does not carry. Checked: every such connection is refused or
// closed, or the message ignored, with the reason in the server's log; the job finishes with both honest
// sites in every round; the server keeps listing them, and never crashes (it runs in this process: an
// uncaught exception would end the test).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { Channel } from '../../../src/streaming/channel.ts';
import type { Frame } from '../../../src/transport/link.ts';
import { FRAME_TYPE, encodeFrame } from '../../../src/transport/codec.ts';
import { MAX_MESSAGE_BYTES } from '../../../src/util/limits.ts';
import { type LogEvent, SiteProcesses, federationKits, jobEndStatus, jobEvents } from '../../helpers/fault.ts';
import { capture, tinyJob, until } from '../../helpers/federation.ts';
import { type DataPlaneSocket, type JobConnection, RogueSite } from '../../helpers/rogue-site.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-rogue-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ROUNDS = 16;
const info = { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: 0, totalRounds: ROUNDS };
const result = (taskId: string, stream?: object): string =>
  JSON.stringify({ msg: { type: 'result', taskId, status: 'ok', info, hasParams: stream !== undefined }, ...(stream && { stream }) });

/** A safetensors header (u64 length, JSON) declaring one F32 tensor of `elements`: the bytes would follow it. */
function header(elements: number): Uint8Array {
  const json = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [elements], data_offsets: [0, elements * 4] } }));
  const b = Buffer.alloc(8 + json.byteLength);
  b.writeBigUInt64LE(BigInt(json.byteLength));
  json.copy(b, 8);
  return b;
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms).unref())]);

/** What site-3 does on a job connection of its own, each ending in a reason the server logs. */
/** (`answers`: the attack answers a task, which the server fails with its reason; the others end the connection) */
const JOB_ATTACKS: { name: string; answers?: true; reason: RegExp; run(c: JobConnection): Promise<void> }[] = [
  {
    name: 'a result whose info does not parse',
    answers: true,
    reason: /malformed message: info\.paramsType/,
    async run(c) {
      const task = (await within(c.tasks.next(), 60_000, 'a task'))!;
      await c.control(
        JSON.stringify({ msg: { type: 'result', taskId: task, status: 'ok', info: { paramsType: 'NOPE' }, hasParams: false } }),
      );
    },
  },
  {
    name: 'a result declaring a 1 TiB tensor in a payload announced at 1 PiB with a 1 TiB window',
    answers: true,
    reason: /refused: stream declares 1099511627776 data bytes, over the limit/,
    async run(c) {
      const task = (await within(c.tasks.next(), 60_000, 'a task'))!;
      await c.control(result(task, { id: 1, window: 2 ** 40, bytes: 2 ** 50 }));
      await c.raw({ type: 'data', stream: 1, bytes: header(2 ** 38), last: false, offset: 0 });
    },
  },
  {
    name: 'payload pieces out of order, then a last piece whose digest does not match',
    answers: true,
    reason: /payload stream 1 from site-3 is corrupt: xxhash64/,
    async run(c) {
      const task = (await within(c.tasks.next(), 60_000, 'a task'))!;
      await c.control(result(task, { id: 1, window: 1 << 20 }));
      const h = header(4);
      await c.raw({ type: 'data', stream: 1, bytes: new Uint8Array(16), last: false, offset: h.byteLength });
      await c.raw({ type: 'data', stream: 1, bytes: h.subarray(4), last: false, offset: 4 });
      await c.raw({ type: 'data', stream: 1, bytes: h, last: true, offset: 0, digest: '0000000000000000' });
    },
  },
  {
    name: 'frames of streams never announced, garbage JSON, unknown message types, then a channel message that breaks the protocol',
    reason: /malformed channel message from site-3/,
    async run(c) {
      const frames: Frame[] = [
        { type: 'data', stream: 77, bytes: new Uint8Array(100), last: true },
        { type: 'ack', stream: 99, bytes: 2 ** 40 },
        { type: 'resend', stream: 5, offset: 2 ** 40 },
        { type: 'cancel', stream: 1234, reason: 'x'.repeat(4096) },
      ];
      for (const f of frames) await c.raw(f);
      for (const json of ['not json', '[1,2]', '{"msg":3}', '{"msg":{"type":"explode"}}', '{"msg":{"type":"metric","key":"","value":"x"}}'])
        await c.control(json);
      await c.control('{"channel":{"type":"resume","control":-1,"streams":[]}}');
      await within(c.closed, 10_000, 'the connection closed');
    },
  },
  {
    name: 'a control message over the limit',
    reason: /control message of \d+ bytes exceeds 16777216/,
    async run(c) {
      await c.control(JSON.stringify({ msg: { type: 'text', key: 'k', text: 'x'.repeat(MAX_MESSAGE_BYTES) } }));
      await within(c.closed, 10_000, 'the connection closed');
    },
  },
];

/** On a registered data-plane job connection: raw bytes that are no frame. */
const DATA_PLANE_ATTACKS: { name: string; bytes: () => Buffer; reason: RegExp }[] = [
  {
    name: 'a length prefix of 4 GiB',
    bytes: () => Buffer.from([0xff, 0xff, 0xff, 0xff, FRAME_TYPE.control, 0x7b]),
    reason: /protocol error from site-3: frame of 4294967295 bytes \(at most \d+\)/,
  },
  {
    name: 'a frame of unknown type 99',
    bytes: () => Buffer.from([1, 0, 0, 0, 99]),
    reason: /protocol error from site-3: frame of unknown type 99/,
  },
];

test(
  'a site with a valid certificate sending malformed messages is refused or dropped with the reason; the honest sites finish the job',
  { timeout: 300_000 },
  async (t) => {
    const k = await federationKits(join(tmp, 'kits'), 'rogue', 3);
    const kit = loadKit(k.server!, 'server');
    const workspace = join(tmp, 'server-ws');
    const serverLog = capture();
    const server = new FederationServer({ kit, workspace, log: serverLog.log });
    await server.start();
    const logged = (): LogEvent[] => serverLog.lines.map((l) => JSON.parse(l) as LogEvent);
    const rogue = new RogueSite(loadKit(k['site-3']!, 'client'), { grpc: server.port, data: server.dataPort });
    const sites = new SiteProcesses(k);
    const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port: server.port });
    let id = '';
    try {
      await rogue.startSession();
      for (const s of ['site-1', 'site-2']) sites.start(s, join(tmp, s));
      await until('three sites', () => server.siteList().length === 3, 60_000);
      id = await admin.submit(tinyJob(join(tmp, 'job'), { minClients: 2, rounds: ROUNDS, sleepMs: 300 }));
      await until('the job deployed to the rogue', () => rogue.jobId === id, 60_000);

      // the job's own connections, each registered (the first one is the join the job waits for)
      // a task that fails (sending it, or its result's message) or a result the round rejects (its payload)
      const failedTask = (e: LogEvent): boolean =>
        (e.msg === 'site failed this round' || e.msg === 'result rejected') && e.site === 'site-3';
      const failures = (): number => jobEvents(workspace, id).filter(failedTask).length;
      for (const a of JOB_ATTACKS) {
        const c = await rogue.registeredJobConnection(id);
        const before = failures();
        await a.run(c);
        // the next connection would replace this one (failing its task for that): first the server answers this one
        if (a.answers) await until(`${a.name}: its task failed`, () => failures() > before, 60_000);
      }
      for (const a of DATA_PLANE_ATTACKS) {
        const d = await rogue.dataPlane(RogueSite.jobHello(id));
        await until('the welcome', () => d.frames.some((f) => f.type === 'welcome'), 10_000);
        for (const b of encodeFrame({ type: 'control', json: JSON.stringify({ msg: { type: 'register', site: 'site-3', protocol: 1 } }) }))
          d.socket.write(b);
        await until('registered', () => d.frames.some((f) => f.type === 'control' && f.json.includes('"registered"')), 10_000);
        d.socket.write(a.bytes());
        await within(d.closed, 10_000, `${a.name}: the connection closed`);
      }

      // sessions beside the rogue's live one, and hellos the data plane refuses
      const session = async (frames: string[]): Promise<{ refused: string | null; closed: string }> => {
        const link = rogue.open({ purpose: 'session', jobId: null, channelId: null });
        for (const json of frames) await link.send({ type: 'control', json });
        const ch = new Channel(link);
        let refused: string | null = null;
        for await (const env of ch.messages()) if ((env.msg as { type?: string }).type === 'refused') refused = String(env.msg.reason);
        return { refused, closed: await within(link.closed, 10_000, 'the session closed') };
      };
      const hello = (site: string): string => JSON.stringify({ msg: { type: 'hello', site, protocol: 1 } });
      const second = await session([hello('site-3')]);
      assert.match(second.refused ?? '', /site-3 is already connected/);
      const garbage = await session(['not json', '{"msg":{"type":"heartbeat"}}']);
      assert.match(garbage.refused ?? '', /malformed session message/);
      const impostor = await session([hello('site-1')]);
      assert.match(impostor.refused ?? '', /does not match the certificate's common name site-3/);
      const violation = await session(['{"channel":{"type":"cack","control":"x"}}']);
      assert.equal(violation.refused, null);
      const refusal = async (h: unknown): Promise<string> => {
        const d: DataPlaneSocket = await rogue.dataPlane(h);
        await within(d.closed, 10_000, 'the data plane connection closed');
        const r = d.frames.find((f) => f.type === 'refuse');
        return r?.type === 'refuse' ? r.reason : `no refusal (${d.error})`;
      };
      assert.match(await refusal({ protocol: 1, purpose: 'session', jobId: null, channelId: null }), /sessions use the gRPC port/);
      assert.match(await refusal({ protocol: 1, purpose: 'job', jobId: 'nope', channelId: null }), /no running job nope/);
      assert.match(await refusal({ protocol: 1, purpose: 'job', jobId: id, channelId: '../../etc' }), /malformed hello: channelId/);
      assert.match(await refusal('this is not json'), /hello is not JSON/);

      await until('the job to end', () => ['FINISHED', 'FAILED', 'ABORTED'].includes(server.store.get(id)?.state ?? ''), 180_000);
      const st = await jobEndStatus(admin, id, 10_000);
      assert.equal(st.state, 'FINISHED', st.detail ?? undefined);
      const events = jobEvents(workspace, id);
      const rounds = events.filter((e) => e.msg === 'round done');
      assert.equal(rounds.length, ROUNDS, 'every round done');
      for (const r of rounds) assert.deepEqual(r.sites, ['site-1', 'site-2'], `round ${r.round as number}`);
      assert.deepEqual(
        server.siteList().map((s) => s.site),
        ['site-1', 'site-2', 'site-3'],
        'the honest sites still connected (and the rogue session, which broke no rule)',
      );

      // each attack's reason, where the server logged it
      const failed = events.filter(failedTask).map((e) => String(e.error));
      const dropped = events
        .filter((e) => e.msg === 'site dropped from the job' && e.site === 'site-3' && e.cause)
        .map((e) => String(e.cause));
      const ignored = events.filter((e) => e.msg === 'malformed message from client ignored' && e.site === 'site-3').length;
      const expect: [string, string[], RegExp][] = [
        ...JOB_ATTACKS.map((a): [string, string[], RegExp] => [a.name, a.answers ? failed : dropped, a.reason]),
        ...DATA_PLANE_ATTACKS.map((a): [string, string[], RegExp] => [a.name, dropped, a.reason]),
      ];
      for (const [what, lines, re] of expect)
        assert.ok(
          lines.some((l) => re.test(l)),
          `${what}: no logged reason matching ${re} in ${JSON.stringify(lines)}`,
        );
      assert.ok(ignored >= 4, `garbage JSON and unknown types: ${ignored} logged as ignored`);
      const sessionLog = logged().filter((e) => e.site === 'site-3' && /session/.test(e.msg));
      assert.ok(
        sessionLog.some((e) => e.msg === 'session connection closed' && /malformed channel message from site-3/.test(String(e.reason))),
        `the session's protocol violation logged: ${JSON.stringify(sessionLog)}`,
      );
      t.diagnostic(
        JSON.stringify({
          rounds: rounds.length,
          jobConnections: JOB_ATTACKS.length + DATA_PLANE_ATTACKS.length,
          sessionConnections: 4,
          refusedHellos: 4,
          tasksFailedBySite3: failed.length,
          site3Drops: dropped.length,
          messagesIgnored: ignored,
        }),
      );
    } catch (e) {
      console.error([...serverLog.lines, ...jobEvents(workspace, id).map((l) => JSON.stringify(l) + '\n')].join(''));
      for (const [s, out] of sites.output) console.error(`${s}:`, out.join(''));
      throw e;
    } finally {
      rogue.close();
      admin.close();
      await sites.stopAll();
      await server.stop();
    }
  },
);
