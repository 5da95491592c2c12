// FedOpt, SCAFFOLD, FedProx's μ, client sampling and robust aggregation as workflows, run through
// the in-process simulator with deterministic trainers: each round against a direct computation,
// and a FedOpt / SCAFFOLD job stopped and resumed ending bit-identical to an uninterrupted one.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FEDPROX_MU, proxMuOf } from '../../../src/algorithms/fedprox.ts';
import { sampleSites, SamplingSchema } from '../../../src/algorithms/sampling.ts';
import { SCAFFOLD_PREFIX, splitPrefixed, withPrefixed } from '../../../src/algorithms/scaffold.ts';
import { ServerOptimizer, stepInMemory } from '../../../src/algorithms/server-optimizer.ts';
import type { ClientAPI, Trainer } from '../../../src/client/api.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';
import { simulateInProcess } from '../../../src/simulator/in-process.ts';
import { FedOpt } from '../../../src/workflows/fedopt.ts';
import { Scaffold } from '../../../src/workflows/scaffold.ts';
import { StrategyWorkflow, fedAvgStrategy } from '../../../src/workflows/strategy.ts';

const ws = (): string => mkdtempSync(join(tmpdir(), 'flotilla-alg-'));
const vals = (d: TensorDict, n = 'w'): number[] => [...(d.get(n)!.data as Float32Array)];

/** FULL = global·scale + shift (weight `steps`); reports the μ and SCAFFOLD c[0] it was sent. */
function affine(scale: number, shift: number, steps = 1, dc?: (c: number[]) => number[]): Trainer {
  return async (flare: ClientAPI) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const { model, extra } = splitPrefixed(m.params, SCAFFOLD_PREFIX.control);
      const w = model.get('w')!.data as Float32Array;
      const out: TensorDict = new Map([
        [
          'w',
          f32(
            [3],
            w.map((x) => x * scale + shift),
          ),
        ],
      ]);
      const c = extra.get('w') ? vals(extra) : null;
      const params = dc && c ? withPrefixed(out, new Map([['w', f32([3], dc(c))]]), SCAFFOLD_PREFIX.delta) : out;
      await flare.send({
        params,
        paramsType: 'FULL',
        metrics: { mu: proxMuOf(m.meta), c0: c?.[0] ?? -1, scaffold: m.meta['scaffold'] === true ? 1 : 0 },
        meta: { NUM_STEPS_CURRENT_ROUND: steps },
        currentRound: m.currentRound,
        totalRounds: m.totalRounds,
      });
    }
  };
}

const threeSites = () => [
  { name: 'site-1', trainer: affine(1, 1, 1) },
  { name: 'site-2', trainer: affine(2, 0, 3) },
  { name: 'site-3', trainer: affine(0.5, -2, 6) },
];

test('FedOpt (FedAdam): each round is the optimizer step on the weighted mean; state saved per round', async () => {
  const dir = ws();
  const init: TensorDict = new Map([['w', f32([3], [1, 2, 3])]]);
  const r = await simulateInProcess({
    workflow: new FedOpt({ rounds: 3, minClients: 3, initialModel: init, optimizer: { name: 'fedadam', lr: 0.1 } }),
    sites: threeSites(),
    workspace: dir,
  });
  const opt = new ServerOptimizer({ name: 'fedadam', lr: 0.1 });
  let x: TensorDict = init;
  let state: { tensors: TensorDict; metadata: Record<string, string> } | null = null;
  for (let round = 0; round < 3; round++) {
    const mean = vals(x).map((v) => (1 * (v + 1) + 3 * (2 * v) + 6 * (0.5 * v - 2)) / 10);
    const s = await stepInMemory(opt, x, new Map([['w', f32([3], mean)]]), state);
    x = s.model;
    state = { tensors: s.state, metadata: s.stateMetadata };
    const saved = await readSafetensors(join(dir, 'server', `round-${round}`, 'global_model.safetensors'));
    vals(saved.tensors).forEach((v, i) => assert.ok(Math.abs(v - vals(x)[i]!) < 1e-5, `round ${round}: ${v} vs ${vals(x)[i]}`));
    const st = await readSafetensors(join(dir, 'server', `round-${round}`, 'server_optimizer.safetensors'));
    assert.equal(st.metadata['flotilla.server_optimizer_steps'], String(round + 1));
  }
  assert.equal(r.rounds.length, 3);
});

for (const kind of ['fedyogi', 'scaffold'] as const) {
  test(`${kind}: a job stopped after round 2 and resumed from the workspace ends bit-identical to an uninterrupted one`, async () => {
    const init: TensorDict = new Map([['w', f32([3], [1, 2, 3])]]);
    const sites = () =>
      kind === 'scaffold'
        ? threeSites().map((s, i) => ({ ...s, trainer: affine(1 - 0.1 * i, i, 1, (c) => c.map((v) => 0.5 - v * 0.1 + i)) }))
        : threeSites();
    const make = (startRound: number, model: TensorDict) => {
      const common = { rounds: 5, minClients: 3, initialModel: model, startRound };
      return kind === 'scaffold' ? new Scaffold(common) : new FedOpt({ ...common, optimizer: { name: 'fedyogi', lr: 0.3 } });
    };
    const whole = await simulateInProcess({ workflow: make(0, init), sites: sites(), workspace: ws() });
    const dir = ws();
    // the first job: two rounds, then "stops" (a job of 2 rounds writes the same files as rounds 0-1 of 5)
    const first =
      kind === 'scaffold'
        ? new Scaffold({ rounds: 2, minClients: 3, initialModel: init })
        : new FedOpt({ rounds: 2, minClients: 3, initialModel: init, optimizer: { name: 'fedyogi', lr: 0.3 } });
    await simulateInProcess({ workflow: first, sites: sites(), workspace: dir });
    const resumedFrom = (await readSafetensors(join(dir, 'server', 'round-1', 'global_model.safetensors'))).tensors;
    const resumed = await simulateInProcess({ workflow: make(2, resumedFrom), sites: sites(), workspace: dir });
    assert.deepEqual(vals(resumed.model), vals(whole.model));
    assert.deepEqual(
      resumed.rounds.map((r) => r.round),
      [2, 3, 4],
    );
    if (kind === 'scaffold') {
      // the control variate reached the trainers and was carried over the restart
      assert.deepEqual(
        resumed.rounds.map((r) => r.siteMetrics['site-1']!['c0']),
        whole.rounds.slice(2).map((r) => r.siteMetrics['site-1']!['c0']),
      );
      assert.ok(resumed.rounds.every((r) => r.siteMetrics['site-1']!['scaffold'] === 1));
    }
    // without the state file a resume is refused, not silently restarted
    await assert.rejects(
      simulateInProcess({ workflow: make(2, resumedFrom), sites: sites(), workspace: ws() }),
      /cannot resume .* is missing/,
    );
  });
}

test('SCAFFOLD: c ← c + (|S|/N)·mean(Δcᵢ) each round, sent to the trainers as scaffold.c.* tensors', async () => {
  const dir = ws();
  const deltas = [
    [1, 0, 0],
    [0, 2, 0],
    [0, 0, 3],
  ];
  const sites = deltas.map((d, i) => ({ name: `site-${i + 1}`, trainer: affine(1, 0, 1, () => d) }));
  const r = await simulateInProcess({
    workflow: new Scaffold({ rounds: 2, minClients: 3, initialModel: new Map([['w', f32([3], [0, 0, 0])]]) }),
    sites,
    workspace: dir,
  });
  const c0 = (await readSafetensors(join(dir, 'server', 'round-0', 'scaffold_c.safetensors'))).tensors;
  assert.deepEqual(vals(c0), [1 / 3, 2 / 3, 1].map(Math.fround));
  // round 1's task carried round 0's c
  assert.equal(r.rounds[1]!.siteMetrics['site-2']!['c0'], Math.fround(1 / 3));
  const c1 = (await readSafetensors(join(dir, 'server', 'round-1', 'scaffold_c.safetensors'))).tensors;
  assert.deepEqual(vals(c1), [2 / 3, 4 / 3, 2].map(Math.fround));
  // the model tensors are aggregated without the variates
  assert.deepEqual([...r.model.keys()], ['w']);
});

test('client sampling: the seeded subset of sites each round; FedProx μ reaches the trainers in meta', async () => {
  const names = ['site-1', 'site-2', 'site-3', 'site-4', 'site-5'];
  const sampling = { fraction: 0.4, seed: 3 };
  const wf = new StrategyWorkflow(
    { rounds: 6, minClients: 2, initialModel: new Map([['w', f32([3], [1, 1, 1])]]), sampling, proxMu: 0.01 },
    fedAvgStrategy,
  );
  const r = await simulateInProcess({ workflow: wf, sites: names.map((name, i) => ({ name, trainer: affine(1, i) })), workspace: ws() });
  const parsed = SamplingSchema.parse(sampling);
  for (const round of r.rounds) {
    assert.deepEqual(round.sites, sampleSites(names, parsed, round.round, 2));
    assert.equal(round.sites.length, 2);
    for (const s of round.sites) assert.equal(round.siteMetrics[s]!['mu'], 0.01);
  }
  assert.ok(new Set(r.rounds.map((x) => x.sites.join())).size > 1, 'different sites in different rounds');
  assert.equal(FEDPROX_MU, 'fedprox_mu');
});

test('robust aggregation in a job: one site sending a sign-flipped, scaled model does not move the median', async () => {
  const names = ['site-1', 'site-2', 'site-3', 'site-4', 'site-5'];
  const trainer = (i: number): Trainer => (i === 4 ? affine(-100, 0) : affine(1, 0.1 * i));
  const run = (aggregation: { rule: 'mean' } | { rule: 'median' } | { rule: 'krum'; byzantine: number }) =>
    simulateInProcess({
      workflow: new StrategyWorkflow(
        { rounds: 1, minClients: 5, initialModel: new Map([['w', f32([3], [1, 1, 1])]]), aggregation },
        fedAvgStrategy,
      ),
      sites: names.map((name, i) => ({ name, trainer: trainer(i) })),
      workspace: ws(),
    });
  const mean = await run({ rule: 'mean' });
  const median = await run({ rule: 'median' });
  const krum = await run({ rule: 'krum', byzantine: 1 });
  assert.ok(vals(mean.model)[0]! < -15, `the mean follows the attacker: ${vals(mean.model)}`);
  assert.deepEqual(vals(median.model), [1.1, 1.1, 1.1].map(Math.fround));
  assert.ok(
    vals(krum.model).every((v) => v >= 1 && v <= 1.31),
    `krum: ${vals(krum.model)}`,
  );
});
