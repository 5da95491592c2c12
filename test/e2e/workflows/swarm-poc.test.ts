// Swarm learning in a POC deployment (poc prepare with 3 clients, `flotilla poc start`: a server and three
// site processes over mutual TLS on loopback, driven through the admin API). A swarm job gives the direct
// FedAvg computation; then the same job with the round's aggregator killed (SIGKILL) mid-round: the
// server names a new aggregator, the round is redone from the last persisted model with the two live
// sites, and the job finishes with the model a direct computation of that history gives.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { pocPrepare } from '../../../src/deploy/poc.ts';
import { freePortPair, repo, until } from '../../helpers/federation.ts';
import { type LogEvent, jobEvents } from '../../helpers/fault.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-swarm-poc-'));
const ws = join(tmp, 'poc');
const run = (...args: string[]): string =>
  execFileSync(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], { cwd: repo, encoding: 'utf8' });
let admin: AdminClient;
let workspace = '';
let pids: Record<string, number> = {};

function killAll(): void {
  // whatever happened, no POC process outlives the test
  for (const pid of Object.values(pids))
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
}

before(async () => {
  // prepared in this process (one CLI start less), started by the CLI as a user would
  const layout = await pocPrepare({ clients: 3, workspace: ws, port: await freePortPair() });
  assert.match(run('poc', 'start', '-w', ws), /Started server, site-1, site-2, site-3/);
  pids = Object.fromEntries(
    Object.entries(JSON.parse(readFileSync(join(ws, 'pids.json'), 'utf8')) as Record<string, { pid: number }>).map(([k, v]) => [k, v.pid]),
  );
  workspace = join(layout.server, 'workspace');
  admin = new AdminClient(join(ws, 'poc', 'prod_01', 'admin@poc.example'));
  const deadline = Date.now() + 40_000;
  let sites: string[] = [];
  while (sites.length < 3 && Date.now() < deadline) {
    sites = await admin.call('sites').then(
      (r) => r.map((x) => x.site),
      () => [],
    );
    if (sites.length < 3) await new Promise((r) => setTimeout(r, 250));
  }
  assert.deepEqual(sites, ['site-1', 'site-2', 'site-3']);
});
after(() => {
  admin?.close();
  if (existsSync(join(ws, 'pids.json'))) run('poc', 'stop', '-w', ws);
  killAll();
  rmSync(tmp, { recursive: true, force: true });
});

function job(name: string, o: { rounds: number; sleepMs?: number; extra?: string }): string {
  const dir = join(tmp, name);
  cpSync(join(repo, 'test/fixtures/jobs/swarm'), dir, { recursive: true });
  let yaml = readFileSync(join(dir, 'job.yaml'), 'utf8').replace('rounds: 4', `rounds: ${o.rounds}`);
  if (o.sleepMs) yaml = yaml.replace('rate: 0.5', `rate: 0.5\n      sleepMs: ${o.sleepMs}`);
  writeFileSync(join(dir, 'job.yaml'), yaml + (o.extra ?? ''));
  return dir;
}

/** FedAvg by hand over the sites of each round (site k moves w halfway to k + i/4, weight 10k). */
function direct(perRound: number[][], n = 6): number[] {
  let w = new Array<number>(n).fill(0);
  for (const sites of perRound) {
    const total = sites.reduce((s, k) => s + 10 * k, 0);
    w = w.map((x, i) => Math.fround(sites.reduce((s, k) => s + 10 * k * Math.fround(x + 0.5 * (k + i / 4 - x)), 0) / total));
  }
  return w;
}

/** Polls the job's state until it is over; returns it. */
async function ended(id: string, ms = 40_000): Promise<{ state: string; detail?: string | null }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const st = await admin.call('status', { job: id });
    if (['FINISHED', 'FAILED', 'ABORTED'].includes(st.state) || Date.now() > deadline) return st;
    await new Promise((r) => setTimeout(r, 200));
  }
}
const finalModel = async (id: string): Promise<number[]> => {
  const m = await readSafetensors(join(workspace, 'jobs', id, 'workspace', 'server', 'global_model.safetensors'));
  return [...(m.tensors.get('w')!.data as Float32Array)];
};

function dump(id: string): void {
  console.error(
    jobEvents(workspace, id)
      .map((l) => JSON.stringify(l))
      .join('\n'),
  );
  for (const name of ['server', 'site-1', 'site-2', 'site-3'])
    if (existsSync(join(ws, 'logs', `${name}.log`)))
      console.error(`${name}:`, readFileSync(join(ws, 'logs', `${name}.log`), 'utf8').slice(-4000));
}

test(
  'a swarm job with three sites: each round aggregated by a site, the model a direct FedAvg computation',
  { timeout: 60_000 },
  async () => {
    const id = await admin.submit(job('plain', { rounds: 3 }));
    try {
      const st = await ended(id);
      assert.equal(st.state, 'FINISHED', st.detail ?? undefined);
      const rounds = jobEvents(workspace, id).filter((e) => e.msg === 'swarm round: aggregator chosen');
      assert.deepEqual(
        rounds.map((e) => e.aggregator),
        ['site-1', 'site-2', 'site-3'],
      );
      assert.deepEqual(
        await finalModel(id),
        direct([
          [1, 2, 3],
          [1, 2, 3],
          [1, 2, 3],
        ]),
      );
    } catch (e) {
      dump(id);
      throw e;
    }
  },
);

test(
  'the aggregator killed mid-round: replaced, the round redone from the last persisted model, the job finishes',
  { timeout: 60_000 },
  async () => {
    const id = await admin.submit(job('kill', { rounds: 4, sleepMs: 1200, extra: 'heartbeatTimeoutSeconds: 2\n' }));
    try {
      const chosen = (): LogEvent[] => jobEvents(workspace, id).filter((e) => e.msg === 'swarm round: aggregator chosen');
      // round 1's aggregator is site-2 (round-robin); kill it while every site trains (1.2 s per round: a margin on a loaded machine)
      await until('round 1 to start', () => chosen().some((e) => e.round === 1), 30_000);
      assert.equal(chosen().find((e) => e.round === 1)!.aggregator, 'site-2');
      await new Promise((r) => setTimeout(r, 200));
      const killedAt = Date.now();
      process.kill(pids['site-2']!, 'SIGKILL');
      const st = await ended(id);
      assert.equal(st.state, 'FINISHED', st.detail ?? undefined);

      const events = jobEvents(workspace, id);
      const failed = events.find((e) => e.msg === 'swarm aggregator failed: the round is redone')!;
      assert.equal(failed.aggregator, 'site-2');
      assert.equal(failed.round, 1);
      assert.deepEqual(
        chosen().map((e) => [e.round, e.attempt, e.aggregator]),
        [
          [0, 0, 'site-1'],
          [1, 0, 'site-2'],
          [1, 1, 'site-3'],
          [2, 0, 'site-1'],
          [3, 0, 'site-3'],
        ],
      );
      const done = events.filter((e) => e.msg === 'round done');
      assert.deepEqual(
        done.map((e) => e.sites),
        [
          ['site-1', 'site-2', 'site-3'],
          ['site-1', 'site-3'],
          ['site-1', 'site-3'],
          ['site-1', 'site-3'],
        ],
      );
      // round 1 was redone from round 0's model: the result is FedAvg over exactly the sites that trained
      assert.deepEqual(
        await finalModel(id),
        direct([
          [1, 2, 3],
          [1, 3],
          [1, 3],
          [1, 3],
        ]),
      );
      const redone = done.find((e) => e.round === 1)!;
      console.log(
        JSON.stringify({ killToRoundDoneSeconds: (redone.time - killedAt) / 1000, detectSeconds: (failed.time - killedAt) / 1000 }),
      );
    } catch (e) {
      dump(id);
      throw e;
    }
  },
);
