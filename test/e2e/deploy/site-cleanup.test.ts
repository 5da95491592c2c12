// A site's task files with real processes: a FederationServer in this process and a `flotilla client
// start` site process over mutual TLS, running a params: file job with a 4 MiB model. A finished job
// leaves only its log in the site's workspace; a site killed with SIGKILL mid-task leaves the job
// folder, the task's input and the trainer's output, a second process on the same workspace is refused
// meanwhile (and removes nothing), and the site started again removes them before it connects, saying
// how many bytes. The figures (bytes left before and after the restart) are printed for docs/security.md.
import assert from 'node:assert/strict';
import { cpSync, existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { writeSafetensors } from '../../../src/core/safetensors.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { JOB_MARKER } from '../../../src/deploy/site-scratch.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { capture, repo, until } from '../../helpers/federation.ts';
import { SiteProcesses, federationKits } from '../../helpers/fault.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-site-cleanup-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const MODEL_FLOATS = 1 << 20; // 4 MiB of float32

/** Bytes of the regular files under `path` (links not followed). */
function bytesUnder(path: string): number {
  if (!existsSync(path)) return 0;
  const st = lstatSync(path);
  if (st.isDirectory()) return readdirSync(path).reduce((s, e) => s + bytesUnder(join(path, e)), 0);
  return st.isFile() ? st.size : 0;
}

/** A params: file job of one site whose trainer writes its output beside the input, then waits `sleepMs`. */
async function fileJob(name: string, rounds: number, sleepMs: number): Promise<string> {
  const dir = join(tmp, name);
  cpSync(join(repo, 'test/fixtures/jobs/tiny-file'), dir, { recursive: true });
  await writeSafetensors(join(dir, 'initial.safetensors'), new Map([['w', f32([MODEL_FLOATS], new Float32Array(MODEL_FLOATS).fill(1))]]));
  const yaml = readFileSync(join(dir, 'job.yaml'), 'utf8')
    .replace('minClients: 2', 'minClients: 1')
    .replace('rounds: 3', `rounds: ${rounds}`);
  writeFileSync(join(dir, 'job.yaml'), `${yaml}heartbeatTimeoutSeconds: 2\n`);
  writeFileSync(
    join(dir, 'trainer.ts'),
    `import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors } from '${repo}src/core/safetensors.ts';
import { f32 } from '${repo}src/core/tensor.ts';
export function createTrainer() {
  return async (flare) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const input = await SafetensorsFile.open(m.paramsPath);
      const t = input.header.tensors[0];
      const w = new Float32Array((await input.readRange(t.name, 0, t.end - t.begin)).slice().buffer).map((v) => v + 1);
      await input.close();
      const out = join(m.paramsPath, '..', 'output.safetensors');
      await writeSafetensors(out, new Map([[t.name, f32(t.shape, w)]]));
      await new Promise((r) => setTimeout(r, ${sleepMs}));
      await flare.send({ params: new Map(), paramsPath: out, paramsType: 'FULL', metrics: {}, meta: { numSamples: 1 }, currentRound: m.currentRound, totalRounds: m.totalRounds });
    }
  };
}
`,
  );
  return dir;
}

test(
  'a finished job leaves only its log at the site; a site killed mid-task leaves its task files, and started again removes them',
  { timeout: 180_000 },
  async () => {
    const k = await federationKits(join(tmp, 'kits'), 'cleanup', 1);
    const kit = loadKit(k.server!, 'server');
    const serverLog = capture();
    const server = new FederationServer({ kit, workspace: join(tmp, 'server-ws'), log: serverLog.log });
    await server.start();
    const ws = join(tmp, 'site-1');
    const jobs = join(ws, 'jobs');
    const sites = new SiteProcesses(k);
    const twin = new SiteProcesses(k);
    const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port: kit.config.listen.port });
    const state = (id: string): string => server.store.get(id)?.state ?? '';
    try {
      sites.start('site-1', ws);
      await until('site-1 to connect', () => server.siteList().length === 1, 60_000);

      // a job that finishes: only its marker and the site's log stay
      const done = await admin.submit(await fileJob('done', 2, 0));
      await until('the first job to end', () => ['FINISHED', 'FAILED', 'ABORTED'].includes(state(done)), 60_000);
      assert.equal(state(done), 'FINISHED', server.store.get(done)?.detail ?? undefined);
      await until('the finished job to be cleaned', () => !existsSync(join(jobs, done, 'app')), 10_000);
      assert.deepEqual(readdirSync(join(jobs, done)).sort(), [JOB_MARKER, 'site-1']);
      assert.deepEqual(readdirSync(join(jobs, done, 'site-1')), ['log.jsonl']);

      // a job killed mid-task
      const id = await admin.submit(await fileJob('killed', 3, 120_000));
      const tasks = join(jobs, id, 'site-1', 'tasks');
      const outputs = (): string[] =>
        existsSync(tasks) ? readdirSync(tasks).filter((t) => existsSync(join(tasks, t, 'output.safetensors'))) : [];
      await until('the trainer to write its output', () => outputs().length === 1, 60_000);
      const taskDir = join(tasks, outputs()[0]!);

      // a second process on the same workspace is refused by the lock and removes nothing
      const second = twin.start('site-1', ws);
      const code = await new Promise<number | null>((r) => second.once('exit', (c) => r(c)));
      assert.notEqual(code, 0);
      assert.match(twin.output.get('site-1')!.join(''), /the site workspace .* is in use by process \d+/);
      assert.ok(existsSync(join(taskDir, 'input.safetensors')), 'the live site keeps its task files');

      await sites.kill('site-1');
      const leftBefore = bytesUnder(join(jobs, id));
      assert.ok(existsSync(join(taskDir, 'input.safetensors')) && existsSync(join(taskDir, 'output.safetensors')));
      assert.ok(existsSync(join(jobs, id, 'app')), 'the killed site left the job folder');
      assert.ok(leftBefore > 3 * MODEL_FLOATS * 4, `input, output and the job folder's model: ${leftBefore} bytes`);

      // abort the job, so that the restarted site is not given it again
      await admin.call('abort', { job: id });
      await until('the job to be aborted', () => state(id) === 'ABORTED', 30_000);
      await until('site-1 to be dropped', () => server.siteList().length === 0, 30_000);

      const restartedAt = Date.now();
      sites.start('site-1', ws);
      await until('site-1 to connect again', () => server.siteList().length === 1, 60_000);
      const leftAfter = bytesUnder(join(jobs, id));
      assert.equal(existsSync(tasks), false, 'the task files are gone');
      assert.equal(existsSync(join(jobs, id, 'app')), false, 'the job folder is gone');
      assert.deepEqual(readdirSync(join(jobs, id)).sort(), [JOB_MARKER, 'site-1']);
      assert.deepEqual(readdirSync(join(jobs, id, 'site-1')), ['log.jsonl'], "the job's log is kept");
      const logged = readFileSync(join(ws, 'log.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { msg: string; files?: number; bytes?: number; jobs?: string[] })
        .find((e) => e.msg.includes('a previous run of this site left'));
      assert.ok(logged, 'the restarted site logs what it removed');
      assert.deepEqual(logged.jobs, [id]);
      assert.equal(logged.bytes, leftBefore - leftAfter, 'the logged bytes are the bytes reclaimed');
      assert.ok(logged.files! >= 3, `input, output and the job folder's files: ${logged.files}`);
      console.log(
        JSON.stringify({
          modelBytes: MODEL_FLOATS * 4,
          leftBytesBeforeRestart: leftBefore,
          leftBytesAfterRestart: leftAfter,
          reclaimedBytes: logged.bytes,
          reclaimedFiles: logged.files,
          restartToConnectedSeconds: (Date.now() - restartedAt) / 1000,
        }),
      );
    } catch (e) {
      console.error(serverLog.lines.join(''));
      for (const [s, out] of [...sites.output, ...twin.output]) console.error(`${s}:`, out.join(''));
      throw e;
    } finally {
      admin.close();
      await sites.stopAll();
      await twin.stopAll();
      await server.stop();
    }
  },
);
