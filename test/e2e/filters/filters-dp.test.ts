// Privacy filters: the RDP accountant against TF-Privacy's published values, DP-FedAvg's clipping and
// Gaussian noise on a site's update (through the site's two filter points), NVFlare's percentile and
// SVT filters, bad parameters named, and the accountant's ε in the server's metrics after every round.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { FLModelInfo } from '../../../src/core/fl-model.ts';
import { type Tensor, f32 } from '../../../src/core/tensor.ts';
import { dictToStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import {
  type Filter,
  FilterChain,
  PrivacyPolicySchema,
  builtinFilter,
  computeRdp,
  entryFor,
  policyFilters,
  dpGaussian,
  epsilonFromRdp,
  gaussianEpsilon,
  noiseForEpsilon,
  percentilePrivacy,
  secureGaussian,
  svtPrivacy,
} from '../../../src/filters/index.ts';
import { parseJobConfig } from '../../../src/runtime/job-config.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { Telemetry } from '../../../src/dashboard/telemetry.ts';
import { tinyJob } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-dp-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('RDP accountant: TF-Privacy rdp_accountant_test values (Mironov 2017; Mironov, Talwar, Zhang 2019)', () => {
  // compute_rdp(0.1, 2, 10, 5) = 0.07737; compute_rdp(0.01, 2.5, 50, [.., 5, 50, 100]) = 0.00218075, 0.023846, 167.416307
  assert.ok(Math.abs(computeRdp(0.1, 2, 10, [5])[0]! - 0.07737) < 5e-6);
  const seq = computeRdp(0.01, 2.5, 50, [5, 50, 100]);
  for (const [got, want] of seq.map((g, i) => [g, [0.00218075, 0.023846, 167.416307][i]!]))
    assert.ok(Math.abs(got! - want!) < 1e-5, `${got} vs ${want}`);
  // q = 1: RDP = α / (2σ²) (compute_rdp(1, 10, 1, 20) = 0.1)
  assert.equal(computeRdp(1, 10, 1, [20])[0], 0.1);
  // get_privacy_spent(range(2, 33), compute_rdp(0.01, 4, 10000, ...), target_delta=1e-5) = (1.258575, order 20)
  const orders = Array.from({ length: 31 }, (_, i) => i + 2);
  const { epsilon, order } = epsilonFromRdp(orders, computeRdp(0.01, 4, 10000, orders), 1e-5);
  assert.ok(Math.abs(epsilon - 1.258575) < 1e-5, String(epsilon));
  assert.equal(order, 20);
  // the noise for a target ε reaches it, and 0.1 % less noise would not
  const sigma = noiseForEpsilon(2, 30, 1e-5);
  assert.ok(gaussianEpsilon(sigma, 30, 1e-5) <= 2 && gaussianEpsilon(sigma / 1.002, 30, 1e-5) > 2);
});

const info = (paramsType: 'FULL' | 'DIFF' = 'FULL'): FLModelInfo => ({
  paramsType,
  metrics: {},
  meta: {},
  currentRound: 3,
  totalRounds: 5,
});
const ctx = (direction: 'task' | 'result') => ({ site: 'site-1', taskName: 'train', direction }) as const;

/** A task's model into the filter at the site, then the trainer's result out: what the server would get. */
async function throughSite(f: Filter, task: Float32Array, result: Float32Array, metrics: [string, number, number?][] = []) {
  const inTask = f.receive!(
    { info: info(), params: dictToStream(new Map([['w', f32([task.length], task)]]), { chunkBytes: 4096 }) },
    ctx('task'),
  );
  await streamToDict(inTask.params); // the trainer reads the task
  const out = f.send!(
    {
      info: info(),
      params: dictToStream(
        new Map<string, Tensor>([
          ['w', f32([result.length], result)],
          ['steps', { dtype: 'I32', shape: [1], data: Int32Array.from([7]) }],
        ]),
      ),
    },
    { ...ctx('result'), metric: (k, v, r) => void metrics.push([k, v, r]) },
  );
  return { info: out.info, dict: await streamToDict(out.params) };
}

test("the privacy filters spool into the site's scratch folder (FilterContext.scratchDir) and remove it when the job ends", async () => {
  const scratch = join(tmp, 'spool');
  const f = dpGaussian({ clip: 1, noiseMultiplier: 1e-6, delta: 1e-5 });
  const at = (direction: 'task' | 'result') => ({ ...ctx(direction), scratchDir: scratch });
  const task = f.receive!({ info: info(), params: dictToStream(new Map([['w', f32([4], [1, 2, 3, 4])]])) }, at('task'));
  await streamToDict(task.params);
  assert.equal(readdirSync(scratch).length, 1, "the task's model is spooled there, not in the OS's temp folder");
  const out = f.send!({ info: info(), params: dictToStream(new Map([['w', f32([4], [2, 3, 4, 5])]])) }, at('result'));
  await streamToDict(out.params);
  // the update's spool goes once it is released; the task model's stays until the next task or the job's end
  assert.equal(readdirSync(scratch).length, 1);
  await f.close!();
  assert.deepEqual(readdirSync(scratch), []);
});

test('dp_gaussian: the update (result − task model) is clipped to its L2 bound, sent as a DIFF, ε reported', async () => {
  const n = 10_000;
  const task = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  const result = task.map((x) => x + 0.1); // update norm 0.1·√n = 10
  const metrics: [string, number, number?][] = [];
  const f = dpGaussian({ clip: 1, noiseMultiplier: 1e-6, delta: 1e-5 });
  const out = await throughSite(f, task, result, metrics);
  assert.equal(out.info.paramsType, 'DIFF');
  assert.deepEqual([...out.dict.keys()], ['w'], 'integer tensors are left out of a private update');
  for (const v of out.dict.get('w')!.data as Float32Array) assert.ok(Math.abs(v - 0.01) < 1e-4, String(v));
  assert.equal(out.info.metrics.dp_epsilon, gaussianEpsilon(1e-6, 1, 1e-5));
  assert.deepEqual(metrics, [
    ['dp_epsilon', gaussianEpsilon(1e-6, 1, 1e-5), 3],
    ['dp_delta', 1e-5, 3],
  ]);
  // a second release composes: ε grows
  const again = await throughSite(f, task, result);
  assert.ok(again.info.metrics.dp_epsilon! > out.info.metrics.dp_epsilon);
});

test('dp_gaussian: a site restarted within a job goes on counting its releases (its job folder keeps the count)', async () => {
  const file = join(tmp, 'site-1', 'dp-releases.filters.0.json');
  const o = { clip: 1, noiseMultiplier: 1, delta: 1e-5, releasesFile: file };
  const task = new Float32Array(16);
  const first = dpGaussian(o);
  await throughSite(first, task, task);
  const second = await throughSite(first, task, task);
  assert.equal(second.info.metrics.dp_epsilon, gaussianEpsilon(1, 2, 1e-5));
  // the site process restarts: a new filter from the same file reports the third release, not a first
  const restarted = await throughSite(dpGaussian(o), task, task);
  assert.equal(restarted.info.metrics.dp_epsilon, gaussianEpsilon(1, 3, 1e-5));
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { releases: 3 });
  // a count that cannot be read fails the filter rather than start the accounting again
  writeFileSync(file, 'garbage');
  assert.throws(() => dpGaussian(o), /dp-releases\.filters\.0\.json: not a count of DP releases .*the privacy spent is unknown/);
});

test('dp_gaussian: noise of standard deviation σ·clip from the CSPRNG; an update inside the bound is not scaled', async () => {
  const n = 200_000;
  const task = new Float32Array(n);
  const result = new Float32Array(n).fill(1e-4); // norm 0.045 < clip 1
  const out = await throughSite(dpGaussian({ clip: 1, noiseMultiplier: 0.5, delta: 1e-5 }), task, result);
  const v = out.dict.get('w')!.data as Float32Array;
  let s = 0;
  let s2 = 0;
  for (const x of v) {
    s += x;
    s2 += x * x;
  }
  const mean = s / n;
  const std = Math.sqrt(s2 / n - mean * mean);
  assert.ok(Math.abs(mean - 1e-4) < 5 * (0.5 / Math.sqrt(n)), `mean ${mean}`);
  assert.ok(Math.abs(std - 0.5) < 0.01, `std ${std}`);
  const g = secureGaussian(100_001);
  assert.ok(Math.abs(g.reduce((a, b) => a + b * b, 0) / g.length - 1) < 0.03);
});

test('percentile_privacy and svt_privacy (NVFlare) on the update', async () => {
  const n = 1000;
  const task = new Float32Array(n);
  const result = Float32Array.from({ length: n }, (_, i) => ((i % 2 ? 1 : -1) * (i + 1)) / 1000);
  const p = (await throughSite(percentilePrivacy({ percentile: 50, gamma: 0.6 }), task, result)).dict.get('w')!.data as Float32Array;
  for (let i = 0; i < n; i++) {
    const a = Math.abs(result[i]!);
    if (a < 0.49) assert.equal(p[i], 0, `below the median: ${result[i]} → ${p[i]}`);
    else if (a > 0.51) assert.equal(Math.abs(p[i]!), Math.min(a, 0.6) === a ? Math.fround(a) : Math.fround(0.6), `${result[i]} → ${p[i]}`);
  }
  const big = Float32Array.from({ length: 50_000 }, (_, i) => Math.sin(i) * 1e-4);
  const s = (
    await throughSite(svtPrivacy({ fraction: 0.1, epsilon: 0.1, noiseVar: 0.1, gamma: 1e-5, tau: 1e-6 }), new Float32Array(big.length), big)
  ).dict.get('w')!.data as Float32Array;
  const nonzero = s.filter((x) => x !== 0).length;
  assert.ok(nonzero > 0.02 * big.length && nonzero < 0.3 * big.length, `svt released ${nonzero} of ${big.length}`);
  for (const x of s) assert.ok(Math.abs(x) <= Math.fround(1e-5));
});

const base = {
  name: 'j',
  minClients: 1,
  model: { module: 'm.ts' },
  workflows: [{ type: 'fedavg', rounds: 1 }],
  executor: { trainer: { module: 't.ts' } },
};
for (const [what, filter, re] of [
  ['ε ≤ 0', { type: 'dp_gaussian', clip: 1, epsilon: 0, rounds: 3 }, /filters\.0\.epsilon: must be > 0/],
  ['clip ≤ 0', { type: 'dp_gaussian', clip: -1, noiseMultiplier: 1 }, /filters\.0\.clip: must be > 0/],
  ['neither σ nor ε', { type: 'dp_gaussian', clip: 1 }, /filters\.0\.noiseMultiplier: give either noiseMultiplier or epsilon/],
  ['ε without rounds', { type: 'dp_gaussian', clip: 1, epsilon: 2 }, /filters\.0\.rounds: epsilon needs the number of rounds/],
  ['δ ≥ 1', { type: 'dp_gaussian', clip: 1, noiseMultiplier: 1, delta: 1 }, /filters\.0\.delta: must be in \(0, 1\)/],
  ['a privacy filter on tasks', { type: 'percentile_privacy', direction: 'task' }, /filters\.0\.direction: privacy filters act on results/],
  ['percentile over 100', { type: 'percentile_privacy', percentile: 101 }, /filters\.0\.percentile: must be in \[0, 100\]/],
  ['svt fraction 0', { type: 'svt_privacy', fraction: 0 }, /filters\.0\.fraction: must be in \(0, 1\]/],
] as const)
  test(`job.yaml: ${what} is refused naming the field`, () =>
    assert.throws(() => parseJobConfig({ ...base, filters: [filter] }, 'job.yaml'), re));

test('DP-FedAvg in a job: every site reports (ε, δ) after every round to the server metrics and Prometheus; the global model is noisy', async () => {
  const dir = tinyJob(join(tmp, 'job'), { rounds: 3 });
  writeFileSync(
    join(dir, 'job.yaml'),
    `${readFileSync(join(dir, 'job.yaml'), 'utf8')}filters:\n  - type: dp_gaussian\n    clip: 10\n    epsilon: 8\n    rounds: 3\n`,
  );
  const ws = join(tmp, 'ws');
  // the server's Prometheus metrics, fed by the simulator's hooks as by a deployed server's
  const telemetry = new Telemetry({ connectedSites: () => 2, jobStates: () => ({}) });
  let jobId = '';
  const r = await simulate({
    jobDir: dir,
    clients: 2,
    threads: 0,
    workspace: ws,
    onStart: (i) => {
      jobId = i.jobId;
      telemetry.jobStarted(i.jobId, i.name, 3);
    },
    onMetric: (m) => telemetry.metricLogged(jobId, m),
  });
  assert.equal(r.rounds.length, 3);
  const exposition = (await telemetry.exposition()).body;
  for (const site of ['site-1', 'site-2']) {
    const eps = new RegExp(`^flotilla_dp_epsilon\\{job_name="tiny",site="${site}"\\} (\\S+)$`, 'm').exec(exposition)?.[1];
    assert.ok(eps !== undefined && Number(eps) > 7.9 && Number(eps) <= 8, `${site}: ${eps}\n${exposition}`);
    assert.match(exposition, new RegExp(`^flotilla_dp_delta\\{job_name="tiny",site="${site}"\\} 0\\.00001$`, 'm'));
  }
  for (const site of ['site-1', 'site-2']) {
    const spool = join(ws, site, 'filter-spool');
    assert.deepEqual(existsSync(spool) ? readdirSync(spool) : [], [], `${site}'s spooled models are removed at the job's end`);
  }
  const events = readFileSync(join(ws, 'server', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; site?: string; key?: string; value?: number; round?: number });
  const eps = events.filter((e) => e.type === 'metric' && e.key === 'dp_epsilon');
  assert.deepEqual(eps.map((e) => `${e.site}:${e.round}`).sort(), ['site-1:0', 'site-1:1', 'site-1:2', 'site-2:0', 'site-2:1', 'site-2:2']);
  const deltas = events.filter((e) => e.type === 'metric' && e.key === 'dp_delta');
  assert.deepEqual(
    deltas.map((e) => `${e.site}:${e.round}:${e.value}`).sort(),
    ['site-1:0', 'site-1:1', 'site-1:2', 'site-2:0', 'site-2:1', 'site-2:2'].map((x) => `${x}:0.00001`),
  );
  const last = eps.filter((e) => e.round === 2).map((e) => e.value!);
  for (const v of last) assert.ok(v <= 8 && v > 7.9, String(v));
  assert.ok(
    r.rounds.every((x) => x.metrics.dp_epsilon! > 0),
    'ε is in every round summary',
  );
  // the noise (σ·clip ≈ 6 per value and round) is there: the global is not the noise-free FedAvg's 1.3125 (targets 1 and 2)
  const w = r.model!.get('w')!.data as Float32Array;
  assert.ok(
    w.every((x) => Number.isFinite(x) && Math.abs(x - 1.5 * (1 - 0.5 ** 3)) > 1e-6),
    String(w),
  );
});

test("a site's privacy policy may require DP: its dp_gaussian runs on the site's results whatever the job says", async () => {
  const policy = PrivacyPolicySchema.parse({ filters: [{ type: 'dp_gaussian', clip: 1, noiseMultiplier: 1e-6 }] });
  const specs = policyFilters(policy);
  const chain = new FilterChain(
    specs.map((s, i) => entryFor(s, `privacy policy filters.${i}`, builtinFilter(s as Exclude<typeof s, { type: 'custom' }>))),
  );
  const task = new Float32Array(100);
  const t = chain.receive({ info: info(), params: dictToStream(new Map([['w', f32([100], task)]])) }, ctx('task'));
  await streamToDict(t.params);
  const out = chain.send(
    { info: info(), params: dictToStream(new Map([['w', f32([100], new Float32Array(100).fill(1))]])) },
    ctx('result'),
  );
  assert.equal(out.info.paramsType, 'DIFF');
  for (const v of (await streamToDict(out.params)).get('w')!.data as Float32Array) assert.ok(Math.abs(v - 0.1) < 1e-4, String(v)); // norm 10 → 1
  assert.throws(
    () => PrivacyPolicySchema.parse({ filters: [{ type: 'custom', module: 'x.ts', direction: 'result' }] }),
    /a privacy policy takes the built-in filters/,
  );
});
