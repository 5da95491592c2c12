// Swarm learning in a deployment on loopback: a FederationServer in this process and three
// `flotilla client start` site processes over mutual TLS (the processes a POC starts). A swarm job gives
// the direct FedAvg computation; then the same job with the round's aggregator killed (SIGKILL)
// mid-round: the server names a new aggregator, the round is redone from the last persisted model with
// the two live sites, and the job finishes with the model a direct computation of that history gives.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AdminClient } from '../src/admin/admin-client.ts';
import { readSafetensors } from '../src/core/safetensors.ts';
import { FederationServer } from '../src/deploy/server.ts';
import { loadKit } from '../src/provision/kit.ts';
import { capture, repo, until } from './helpers/federation.ts';
import { type LogEvent, SiteProcesses, federationKits, jobEvents } from './helpers/fault.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-swarm-deploy-'));
let server: FederationServer;
let sites: SiteProcesses;
let admin: AdminClient;
const serverLog = capture();
const workspace = join(tmp, 'server-ws');

before(async () => {
  const k = await federationKits(join(tmp, 'kits'), 'swarm', 3);
  const kit = loadKit(k.server!, 'server');
  server = new FederationServer({ kit, workspace, log: serverLog.log });
  await server.start();
  sites = new SiteProcesses(k);
  for (const s of ['site-1', 'site-2', 'site-3']) sites.start(s, join(tmp, s));
  admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port: kit.config.listen.port });
  await until('three sites to connect', () => server.siteList().length === 3, 30_000);
});
after(async () => {
  admin.close();
  await sites.stopAll();
  await server.stop();
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

const ended = (id: string) => (): boolean => ['FINISHED', 'FAILED', 'ABORTED'].includes(server.store.get(id)?.state ?? '');
const finalModel = async (id: string): Promise<number[]> => {
  const m = await readSafetensors(join(workspace, 'jobs', id, 'workspace', 'server', 'global_model.safetensors'));
  return [...(m.tensors.get('w')!.data as Float32Array)];
};

function dump(id: string): void {
  console.error([...serverLog.lines, ...jobEvents(workspace, id).map((l) => JSON.stringify(l) + '\n')].join(''));
  for (const [s, out] of sites.output) console.error(`${s}:`, out.join(''));
}

test(
  'a swarm job with three sites: each round aggregated by a site, the model a direct FedAvg computation',
  { timeout: 60_000 },
  async () => {
    const id = await admin.submit(job('plain', { rounds: 3 }));
    try {
      await until('the job to end', ended(id), 40_000);
      const st = await admin.call('status', { job: id });
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
    const id = await admin.submit(job('kill', { rounds: 4, sleepMs: 600, extra: 'heartbeatTimeoutSeconds: 2\n' }));
    try {
      const chosen = (): LogEvent[] => jobEvents(workspace, id).filter((e) => e.msg === 'swarm round: aggregator chosen');
      // round 1's aggregator is site-2 (round-robin); kill it while every site trains
      await until('round 1 to start', () => chosen().some((e) => e.round === 1), 30_000);
      assert.equal(chosen().find((e) => e.round === 1)!.aggregator, 'site-2');
      await new Promise((r) => setTimeout(r, 200));
      const killedAt = Date.now();
      await sites.kill('site-2');
      await until('the job to end', ended(id), 40_000);
      const st = await admin.call('status', { job: id });
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
