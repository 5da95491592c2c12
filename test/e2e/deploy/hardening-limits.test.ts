// Bounded resources against a misbehaving site, over real gRPC with mutual TLS: a rogue site that
// declares a 100 GB result for a 1 MiB model is cut off at its header, having sent no more than
// the flow-control window, with the server's RSS unchanged; a stream whose header declares
// gigabytes that never arrive makes the receiving side reserve nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { buildHeader } from '../../../src/core/safetensors-header.ts';
import { decodeStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { SESSION_PROTOCOL } from '../../../src/deploy/session.ts';
import { FederationSite } from '../../../src/deploy/site.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { provision } from '../../../src/provision/provision.ts';
import { RUNTIME_PROTOCOL } from '../../../src/runtime/messages.ts';
import { Channel } from '../../../src/streaming/index.ts';
import { GrpcClient } from '../../../src/transport/grpc/client.ts';
import { capture, tinyJob, until } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-hardening-limits-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const MB = 1 << 20;
const DECLARED = 100e9;

/** safetensors bytes whose header declares one F32 tensor of `bytes` bytes, then `sent` zero bytes at most, as fast as allowed. */
async function* rogueStream(bytes: number, counter: { sent: number }, cap: number): AsyncGenerator<Uint8Array> {
  yield buildHeader([{ name: 'w', dtype: 'F32', shape: [bytes / 4] }]).bytes;
  const chunk = new Uint8Array(MB);
  while (counter.sent < cap) {
    counter.sent += chunk.byteLength;
    yield chunk;
  }
}

test('a header declaring 4 GiB that never arrives reserves nothing: 336 bytes in, the stream fails as incomplete', async () => {
  const header = buildHeader([...Array(4).keys()].map((i) => ({ name: `t${i}`, dtype: 'F32' as const, shape: [2 ** 28] }))).bytes;
  assert.ok(header.byteLength < 336, `header of ${header.byteLength} bytes`);
  let reserved = -1;
  const ab0 = process.memoryUsage().arrayBuffers;
  const stream = await decodeStream(
    (async function* () {
      yield header;
      yield new Uint8Array(16);
      // the receiver now holds what it allocated for the stream: V8 counts it whether or not pages are touched
      await new Promise((r) => setTimeout(r, 50));
      reserved = process.memoryUsage().arrayBuffers - ab0;
    })(),
  );
  await assert.rejects(streamToDict(stream), /stream ended before all tensor data arrived/);
  assert.ok(reserved >= 0);
  assert.ok(
    reserved < 64 * MB,
    `${(reserved / MB).toFixed(1)} MiB reserved for a stream of ${header.byteLength + 16} bytes declaring 4 GiB`,
  );
});

test(
  'a rogue site declaring a 100 GB result for a 1 MiB model is cut off at its header; the server RSS stays flat and the job names the limit',
  { timeout: 90_000 },
  async (t) => {
    const project = parseProject({
      name: 'limits',
      participants: [
        { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1, dataPort: null },
        { type: 'client', name: 'site-1', org: 'a' },
        { type: 'client', name: 'site-2', org: 'b' },
        { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
      ],
    });
    const k = (await provision(project, { outDir: join(tmp, 'kits') })).kits;
    const serverLog = capture();
    const server = new FederationServer({
      kit: loadKit(k.server!, 'server'),
      workspace: join(tmp, 'server'),
      host: '127.0.0.1',
      port: 0,
      dataPort: null,
      log: serverLog.log,
    });
    const port = await server.start();
    const site1 = new FederationSite({ kit: loadKit(k['site-1']!, 'client'), workspace: join(tmp, 'site-1'), host: '127.0.0.1', port });
    const running = site1.run();

    // the rogue: site-2's real kit, speaking the session and job protocols itself
    const rogueKit = loadKit(k['site-2']!, 'client');
    const grpc = new GrpcClient({
      host: '127.0.0.1',
      port,
      serverName: rogueKit.config.serverName,
      caPem: rogueKit.caPem,
      certPem: rogueKit.certPem,
      keyPem: rogueKit.keyPem,
    });
    const counter = { sent: 0 };
    const rss: { before?: number; peak: number; after?: number } = { peak: 0 };
    let sendOutcome: Promise<string> | null = null;
    const session = new Channel(grpc.open({ purpose: 'session', jobId: null, channelId: 'rogue-session-01' }));
    let heartbeat: NodeJS.Timeout | undefined;
    const runJob = async (jobId: string): Promise<void> => {
      const job = new Channel(grpc.open({ purpose: 'job', jobId, channelId: null }));
      await job.send({ type: 'register', site: 'site-2', protocol: RUNTIME_PROTOCOL });
      for await (const env of job.messages()) {
        const m = env.msg as { type: string; taskId?: string; info?: unknown };
        if (m.type !== 'task') continue;
        if (env.payload) for await (const piece of env.payload) void piece;
        global.gc?.();
        rss.before = process.memoryUsage().rss;
        const sampler = setInterval(() => (rss.peak = Math.max(rss.peak, process.memoryUsage().rss)), 20);
        sendOutcome = job
          .send(
            {
              type: 'result',
              taskId: m.taskId,
              status: 'ok',
              info: { paramsType: 'FULL', metrics: {}, meta: { numSamples: 1 }, currentRound: 0, totalRounds: 1 },
              hasParams: true,
            },
            rogueStream(DECLARED, counter, 4096 * MB),
          )
          .then(
            () => 'sent in full',
            (e: Error) => e.message,
          )
          .finally(() => {
            clearInterval(sampler);
            rss.after = process.memoryUsage().rss;
          });
      }
    };
    const rogue = (async () => {
      await session.send({ type: 'hello', site: 'site-2', protocol: SESSION_PROTOCOL });
      for await (const env of session.messages()) {
        const m = env.msg as { type: string; jobId?: string };
        if (m.type === 'welcome')
          heartbeat = setInterval(() => void session.send({ type: 'heartbeat', runningJobs: [] }).catch(() => undefined), 1000);
        if (m.type === 'deploy' && env.payload) {
          for await (const piece of env.payload) void piece;
          void runJob(m.jobId!).catch(() => undefined);
        }
      }
    })().catch(() => undefined);

    const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
    try {
      await until('both sites', () => server.siteList().length === 2);
      // a 1 MiB model: 262,144 float32 weights
      const dir = tinyJob(join(tmp, 'job'), { minClients: 2, rounds: 1 });
      const trainer = join(dir, 'trainer.ts');
      writeFileSync(trainer, readFileSync(trainer, 'utf8').replace('f32([4], [0, 0, 0, 0])', 'f32([262144], new Float32Array(262144))'));
      const id = await admin.submit(dir);
      await until('the job to end', () => ['FINISHED', 'FAILED'].includes(server.store.get(id)?.state ?? ''), 60_000);
      await until('the rogue send to end', () => rss.after !== undefined, 10_000);
      const why = await sendOutcome!;
      const limit = 2 * (1 * MB + 128) + 64 * MB;
      const jobLog = readFileSync(join(tmp, 'server', 'jobs', id, 'workspace', 'server', 'log.jsonl'), 'utf8');
      const refused = jobLog.split('\n').find((l) => l.includes('result refused'));
      assert.ok(refused, `the job's log names the refusal: ${jobLog}\n${serverLog.lines.join('')}`);
      assert.match(refused, /stream declares 100000000000 data bytes, over the limit of 6[0-9]{7}/);
      assert.match(why, /result too large/, 'the rogue was told why');
      // cut at the header: what it could push before the refusal is bounded by the window, not by its 100 GB
      assert.ok(counter.sent <= 64 * MB, `the rogue sent ${(counter.sent / MB).toFixed(0)} MiB before the cut`);
      const grown = rss.peak - rss.before!;
      assert.ok(grown < 100 * MB, `server RSS grew ${(grown / MB).toFixed(1)} MiB while the rogue streamed`);
      const status = await admin.call('status', { job: id });
      t.diagnostic(
        JSON.stringify({
          declaredBytes: DECLARED,
          limitBytes: limit,
          rogueSentMiB: +(counter.sent / MB).toFixed(1),
          rssBeforeMiB: +(rss.before! / MB).toFixed(1),
          rssPeakMiB: +(rss.peak / MB).toFixed(1),
          rssAfterMiB: +(rss.after! / MB).toFixed(1),
          job: status.state,
        }),
      );
    } finally {
      clearInterval(heartbeat);
      admin.close();
      session.close('test over');
      grpc.close();
      site1.stop();
      await running;
      await server.stop();
      await rogue;
    }
  },
);
