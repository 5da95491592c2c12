import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ClientAPI, Trainer } from '../../../src/client/api.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';
import { type RelayHop, type RelayOptions, RelayAbortedError } from '../../../src/runtime/controller.ts';
import { simulateInProcess } from '../../../src/simulator/in-process.ts';
import { CrossSiteEval } from '../../../src/workflows/cross-site-eval.ts';
import { Cyclic } from '../../../src/workflows/cyclic.ts';
import { FedAvg } from '../../../src/workflows/fedavg.ts';
import type { WorkflowContext } from '../../../src/workflows/workflow.ts';

const ws = (): string => mkdtempSync(join(tmpdir(), 'flotilla-wf-'));
const vals = (d: TensorDict, n = 'w'): number[] => [...(d.get(n)!.data as Float32Array)];

/** A trainer whose update is deterministic: FULL = global·scale + shift, weighted by `steps`. */
function affineTrainer(scale: number, shift: number, steps: number, type: 'FULL' | 'DIFF' = 'FULL'): Trainer {
  return async (flare: ClientAPI) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      if (flare.isSubmitModel()) {
        await flare.send({ ...m, params: new Map([['w', f32([3], [shift, shift, shift])]]) });
        continue;
      }
      if (flare.isEvaluate()) {
        const w = m.params.get('w')!.data as Float32Array;
        await flare.send({ ...m, params: new Map(), metrics: { score: w[0]! + shift / 100 } });
        continue;
      }
      const w = m.params.get('w')!.data as Float32Array;
      const out = type === 'FULL' ? w.map((x) => x * scale + shift) : w.map((x) => x * scale + shift - x);
      flare.log('seen', w[0]!);
      await flare.send({
        params: new Map([['w', f32([3], out)]]),
        paramsType: type,
        metrics: { loss: shift },
        meta: { NUM_STEPS_CURRENT_ROUND: steps },
        currentRound: m.currentRound,
        totalRounds: m.totalRounds,
      });
    }
  };
}

test('FedAvg: every round equals the weighted mean computed directly; models saved per round', async () => {
  const dir = ws();
  const sites = [
    { name: 'site-1', trainer: affineTrainer(1, 1, 1) },
    { name: 'site-2', trainer: affineTrainer(2, 0, 3, 'DIFF') },
    { name: 'site-3', trainer: affineTrainer(0.5, -2, 6) },
  ];
  const init = new Map([['w', f32([3], [1, 2, 3])]]);
  const r = await simulateInProcess({ workflow: new FedAvg({ rounds: 3, minClients: 3, initialModel: init }), sites, workspace: dir });
  let expected = [1, 2, 3];
  for (let round = 0; round < 3; round++) {
    expected = expected.map((x) => (1 * (x + 1) + 3 * (2 * x) + 6 * (0.5 * x - 2)) / 10);
    const saved = await readSafetensors(join(dir, 'server', `round-${round}`, 'global_model.safetensors'));
    vals(saved.tensors).forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-4, `round ${round}: ${v} vs ${expected[i]}`));
    assert.equal(saved.metadata.round, String(round));
  }
  vals(r.model).forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-4));
  assert.equal(r.rounds.length, 3);
  assert.deepEqual(r.rounds[0]!.sites, ['site-1', 'site-2', 'site-3']);
  assert.ok(Math.abs(r.rounds[0]!.metrics.loss! - (1 * 1 + 3 * 0 + 6 * -2) / 10) < 1e-9);
});

test('FedAvg: a failing site is tolerated down to minClients, and fails the round below it', async () => {
  const failing: Trainer = async (flare) => {
    await flare.init();
    await flare.receive();
    throw new Error('GPU on fire');
  };
  const init = new Map([['w', f32([3], [0, 0, 0])]]);
  const ok = await simulateInProcess({
    workflow: new FedAvg({ rounds: 1, minClients: 2, initialModel: init }),
    sites: [
      { name: 'a', trainer: affineTrainer(1, 2, 1) },
      { name: 'b', trainer: affineTrainer(1, 4, 1) },
      { name: 'c', trainer: failing },
    ],
    workspace: ws(),
  });
  assert.deepEqual(vals(ok.model), [3, 3, 3]);
  assert.match(ok.rounds[0]!.failures.c!, /GPU on fire/);

  await assert.rejects(
    simulateInProcess({
      workflow: new FedAvg({ rounds: 1, minClients: 3, initialModel: init }),
      sites: [
        { name: 'a', trainer: affineTrainer(1, 2, 1) },
        { name: 'b', trainer: affineTrainer(1, 4, 1) },
        { name: 'c', trainer: failing },
      ],
      workspace: ws(),
    }),
    /only 2 of 3 required sites succeeded.*GPU on fire/s,
  );
});

test('Cyclic: the model passes through every site in order, each round', async () => {
  const r = await simulateInProcess({
    workflow: new Cyclic({ rounds: 2, minClients: 3, initialModel: new Map([['w', f32([3], [1, 1, 1])]]) }),
    sites: [
      { name: 's1', trainer: affineTrainer(2, 0, 1) },
      { name: 's2', trainer: affineTrainer(1, 3, 1, 'DIFF') },
      { name: 's3', trainer: affineTrainer(1, -1, 1) },
    ],
    workspace: ws(),
  });
  // one pass: x → 2x → 2x+3 → 2x+2 ; twice from 1: 4 → 10
  assert.deepEqual(vals(r.model), [10, 10, 10]);
  assert.deepEqual(r.rounds[1]!.sites, ['s1', 's2', 's3']);
});

/** Records, in order, what every site was sent, so a test can see when each hop reached its site. */
function recording(log: { site: string; w: number[] }[], site: string, inner: Trainer): Trainer {
  return async (flare) => {
    const receive = flare.receive.bind(flare);
    flare.receive = async () => {
      const m = await receive();
      if (m) log.push({ site, w: [...(m.params.get('w')!.data as Float32Array)] });
      return m;
    };
    await inner(flare);
  };
}

/** A workflow that only relays, keeping every hop and how many sites had been contacted when it was yielded. */
function relayWorkflow(model: TensorDict, opts: RelayOptions, sent: { site: string }[]) {
  return {
    name: 'relay-probe',
    async run(ctx: WorkflowContext): Promise<{ hops: RelayHop[]; contactedAtYield: number[]; final: TensorDict }> {
      const hops: RelayHop[] = [];
      const contactedAtYield: number[] = [];
      const it = ctx.controller.relay(
        { name: 'train', info: { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: 0, totalRounds: 1 }, model },
        opts,
      );
      for (;;) {
        const n = await it.next();
        if (n.done) return { hops, contactedAtYield, final: n.value };
        hops.push(n.value);
        contactedAtYield.push(sent.length);
      }
    },
  };
}

const failingTrainer: Trainer = async (flare) => {
  await flare.init();
  await flare.receive();
  throw new Error('GPU on fire');
};

test("relay: visits sites in the given order, hop k's result is hop k+1's input, exact math, hops yielded as they arrive", async () => {
  const sent: { site: string; w: number[] }[] = [];
  const r = await simulateInProcess({
    workflow: relayWorkflow(new Map([['w', f32([3], [1, 2, 3])]]), { order: ['s3', 's1', 's2', 's1'], timeoutMs: 30_000 }, sent),
    sites: [
      { name: 's1', trainer: recording(sent, 's1', affineTrainer(2, 0, 1)) },
      { name: 's2', trainer: recording(sent, 's2', affineTrainer(1, 3, 1, 'DIFF')) },
      { name: 's3', trainer: recording(sent, 's3', affineTrainer(1, -1, 1)) },
    ],
    workspace: ws(),
  });
  // s3: x-1, s1: 2x, s2: x+3 (sent as a DIFF), s1: 2x
  const expected = [
    [0, 1, 2],
    [0, 2, 4],
    [3, 5, 7],
    [6, 10, 14],
  ];
  assert.deepEqual(
    sent.map((s) => s.site),
    ['s3', 's1', 's2', 's1'],
  );
  assert.deepEqual(
    r.hops.map((h) => [h.index, h.site, h.ok]),
    [
      [0, 's3', true],
      [1, 's1', true],
      [2, 's2', true],
      [3, 's1', true],
    ],
  );
  assert.deepEqual(sent[0]!.w, [1, 2, 3]);
  r.hops.forEach((h, k) => {
    assert.ok(h.ok);
    assert.deepEqual(vals(h.model), expected[k], `hop ${k} output`);
    assert.deepEqual(sent[k]!.w, vals(h.input), `site of hop ${k} got the hop's input`);
    if (k > 0) assert.deepEqual(vals(h.input), expected[k - 1], `hop ${k} input = hop ${k - 1} output`);
  });
  assert.equal(r.hops[2]!.ok && r.hops[2]!.info.paramsType, 'DIFF');
  assert.deepEqual(vals(r.final), [6, 10, 14]);
  // each hop is yielded before the next site is contacted
  assert.deepEqual(r.contactedAtYield, [1, 2, 3, 4]);
});

test('relay: a failing or timed-out hop aborts with the site named (default), or is skipped with the model unchanged', async () => {
  const init = (): TensorDict => new Map([['w', f32([3], [1, 1, 1])]]);
  const slow: Trainer = async (flare) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      await new Promise((res) => setTimeout(res, 400));
      await flare.send(m);
    }
  };
  const sites = (sent: { site: string; w: number[] }[]) => [
    { name: 'a', trainer: recording(sent, 'a', affineTrainer(1, 1, 1)) },
    { name: 'bad', trainer: recording(sent, 'bad', failingTrainer) },
    { name: 'slow', trainer: recording(sent, 'slow', slow) },
    { name: 'c', trainer: recording(sent, 'c', affineTrainer(3, 0, 1)) },
  ];

  const sentAbort: { site: string; w: number[] }[] = [];
  await assert.rejects(
    simulateInProcess({
      workflow: relayWorkflow(init(), { order: ['a', 'bad', 'c'] }, sentAbort),
      sites: sites(sentAbort),
      workspace: ws(),
    }),
    (e: unknown) => {
      assert.ok(e instanceof RelayAbortedError);
      assert.match(e.message, /relay train: hop 2 of 3 \(site bad\) failed: .*GPU on fire.*relay aborted/s);
      assert.equal(e.hop.site, 'bad');
      assert.deepEqual(vals(e.hop.input), [2, 2, 2]);
      return true;
    },
  );
  assert.deepEqual(
    sentAbort.map((s) => s.site),
    ['a', 'bad'],
    'no site after the failed hop is contacted',
  );

  const sentTimeout: { site: string; w: number[] }[] = [];
  await assert.rejects(
    simulateInProcess({
      workflow: relayWorkflow(init(), { order: ['a', 'slow', 'c'], timeoutMs: 100 }, sentTimeout),
      sites: sites(sentTimeout),
      workspace: ws(),
    }),
    /hop 2 of 3 \(site slow\) failed: task train timed out after 100 ms/,
  );

  const sentSkip: { site: string; w: number[] }[] = [];
  const skipped = await simulateInProcess({
    workflow: relayWorkflow(init(), { order: ['a', 'bad', 'slow', 'c'], timeoutMs: 100, onFailure: 'skip' }, sentSkip),
    sites: sites(sentSkip),
    workspace: ws(),
  });
  assert.deepEqual(
    skipped.hops.map((h) => [h.site, h.ok]),
    [
      ['a', true],
      ['bad', false],
      ['slow', false],
      ['c', true],
    ],
  );
  const [, bad, late, c] = skipped.hops;
  assert.ok(bad && !bad.ok && /GPU on fire/.test(bad.error));
  assert.ok(late && !late.ok && /timed out after 100 ms/.test(late.error));
  assert.deepEqual(sentSkip.find((s) => s.site === 'c')!.w, [2, 2, 2], 'the site after the failed ones gets the last good model');
  assert.ok(c && c.ok);
  assert.deepEqual(vals(c.model), [6, 6, 6]);
  assert.deepEqual(vals(skipped.final), [6, 6, 6]);
});

test('Cyclic: a failed site is skipped by default, and aborts the round with onSiteFailure: abort', async () => {
  const init = (): TensorDict => new Map([['w', f32([3], [1, 1, 1])]]);
  const sites = () => [
    { name: 's1', trainer: affineTrainer(2, 0, 1) },
    { name: 's2', trainer: failingTrainer },
    { name: 's3', trainer: affineTrainer(1, -1, 1) },
  ];
  const r = await simulateInProcess({
    workflow: new Cyclic({ rounds: 1, minClients: 2, initialModel: init() }),
    sites: sites(),
    workspace: ws(),
  });
  assert.deepEqual(vals(r.model), [1, 1, 1]); // 1 → 2 → (s2 skipped) → 1
  assert.deepEqual(r.rounds[0]!.sites, ['s1', 's3']);
  assert.match(r.rounds[0]!.failures.s2!, /GPU on fire/);
  await assert.rejects(
    simulateInProcess({
      workflow: new Cyclic({ rounds: 1, minClients: 2, initialModel: init(), onSiteFailure: 'abort' }),
      sites: sites(),
      workspace: ws(),
    }),
    /cyclic round 0: relay train: hop 2 of 3 \(site s2\) failed: .*GPU on fire/s,
  );
});

test('Cross-site evaluation: every model (sites + server) on every site → full matrix', async () => {
  const dir = ws();
  const r = await simulateInProcess({
    workflow: new CrossSiteEval({ minClients: 2, globalModel: new Map([['w', f32([3], [7, 7, 7])]]) }),
    sites: [
      { name: 'x', trainer: affineTrainer(1, 10, 1) },
      { name: 'y', trainer: affineTrainer(1, 20, 1) },
    ],
    workspace: dir,
  });
  // score = first weight of the evaluated model + evaluator's shift / 100
  assert.deepEqual(r.matrix, {
    server: { x: { score: 7.1 }, y: { score: 7.2 } },
    x: { x: { score: 10.1 }, y: { score: 10.2 } },
    y: { x: { score: 20.1 }, y: { score: 20.2 } },
  });
  const saved = await readSafetensors(join(dir, 'server', 'cross_site', 'models', 'y.safetensors'));
  assert.deepEqual(vals(saved.tensors), [20, 20, 20]);
});

test('Offloaded FedAvg (model and running sum on disk) gives the in-memory result; partial and DIFF results too', async () => {
  const { OffloadedFedAvg } = await import('../../../src/workflows/fedavg-offload.ts');
  const partial: Trainer = async (flare) => {
    // sends only "w" (like LoRA adapters or excluded variables): "b" keeps the others' mean
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const w = m.params.get('w')!.data as Float32Array;
      await flare.send({
        ...m,
        params: new Map([
          [
            'w',
            f32(
              [3],
              w.map((x) => x - 1),
            ),
          ],
        ]),
        paramsType: 'DIFF',
        meta: { numSamples: 2 },
      });
    }
  };
  const sites = () => [
    { name: 'site-1', trainer: affineTrainer(1, 1, 1) },
    { name: 'site-2', trainer: affineTrainer(2, 0, 3, 'DIFF') },
    { name: 'site-3', trainer: partial },
  ];
  const init = (): TensorDict =>
    new Map([
      ['w', f32([3], [1, 2, 3])],
      ['b', f32([2], [5, 6])],
    ]);
  const mem = await simulateInProcess({
    workflow: new FedAvg({ rounds: 3, minClients: 3, initialModel: init() }),
    sites: sites(),
    workspace: ws(),
  });
  const dir = ws();
  const off = await simulateInProcess({
    workflow: new OffloadedFedAvg({ rounds: 3, minClients: 3, initialModel: init() }),
    sites: sites(),
    workspace: dir,
  });
  const disk = await readSafetensors(off.modelPath);
  for (const name of ['w', 'b']) {
    const a = vals(mem.model, name);
    const b = vals(disk.tensors, name);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) < 1e-5, `${name}[${i}] ${v} vs ${b[i]}`));
  }
  assert.deepEqual(vals(disk.tensors, 'b'), [5, 6], 'a tensor nobody sent keeps the global value');
  const latest = await readSafetensors(join(dir, 'server', 'global_model.safetensors'));
  assert.deepEqual(vals(latest.tensors), vals(disk.tensors));
});
