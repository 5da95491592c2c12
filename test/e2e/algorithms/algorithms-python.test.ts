// SCAFFOLD's control variates through the Client API to a Python trainer (ex-process, numpy,
// python/flotilla/algorithms.py) and a TypeScript one (src/algorithms/scaffold.ts): the same
// quadratic trainer in both languages gives the same global model and control variate.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { SCAFFOLD_PREFIX, ScaffoldMeta, clientControlUpdate, splitPrefixed, withPrefixed } from '../../../src/algorithms/scaffold.ts';
import type { ClientAPI, Trainer } from '../../../src/client/api.ts';
import { ExProcessTrainerHost } from '../../../src/client/host/process-host.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';
import { simulateInProcess } from '../../../src/simulator/in-process.ts';
import { Scaffold } from '../../../src/workflows/scaffold.ts';

const PYTHON = '/usr/bin/python3';
const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const script = path.join(repoRoot, 'python/tests/trainers/scaffold_quadratic.py');
const K = 5;
const LR = 0.1;

/** The TypeScript twin of scaffold_quadratic.py. */
function quadratic(): Trainer {
  let ci: TensorDict = new Map();
  return async (flare: ClientAPI) => {
    await flare.init();
    const k = Number(flare.siteName().split('-').pop());
    const target = [k, -k, 2 * k];
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      assert.equal(m.meta[ScaffoldMeta.enabled], true);
      const { model: x, extra: c } = splitPrefixed(m.params, SCAFFOLD_PREFIX.control);
      const cw = c.get('w')!.data as Float32Array;
      const ciw = (ci.get('w')?.data as Float32Array | undefined) ?? new Float32Array(3);
      const corr = cw.map((v, i) => v - ciw[i]!);
      const w = Float32Array.from(x.get('w')!.data as Float32Array);
      for (let s = 0; s < K; s++) {
        for (let i = 0; i < 3; i++) w[i] = w[i]! - Math.fround(LR) * (w[i]! - target[i]!);
        for (let i = 0; i < 3; i++) w[i] = w[i]! - Math.fround(LR) * corr[i]!;
      }
      const y: TensorDict = new Map([['w', f32([3], w)]]);
      const u = clientControlUpdate({ ci, c, x, y, steps: K, lr: LR });
      ci = u.ci;
      await flare.send({
        params: withPrefixed(y, u.delta, SCAFFOLD_PREFIX.delta),
        paramsType: 'FULL',
        metrics: {},
        meta: { NUM_STEPS_CURRENT_ROUND: 1 },
        currentRound: m.currentRound,
        totalRounds: m.totalRounds,
      });
    }
  };
}

function python(): ExProcessTrainerHost {
  return new ExProcessTrainerHost({
    command: PYTHON,
    args: [script],
    cwd: path.dirname(script),
    env: { PYTHONPATH: path.join(repoRoot, 'python'), OMP_NUM_THREADS: '1', PYTHONDONTWRITEBYTECODE: '1' },
    helloTimeoutMs: 30_000,
    stopTimeoutMs: 10_000,
  });
}

test('SCAFFOLD with Python trainers: the same model and control variate as with TypeScript ones', async () => {
  const r = spawnSync(PYTHON, ['-c', 'import numpy']);
  if (r.error || r.status !== 0) assert.fail(`${PYTHON} cannot import numpy: apt-get install -y python3-numpy`);
  const init = (): TensorDict => new Map([['w', f32([3], [0, 0, 0])]]);
  const dirTs = mkdtempSync(path.join(tmpdir(), 'flotilla-scaffold-ts-'));
  const dirPy = mkdtempSync(path.join(tmpdir(), 'flotilla-scaffold-py-'));
  const ts = await simulateInProcess({
    workflow: new Scaffold({ rounds: 4, minClients: 3, initialModel: init() }),
    sites: [1, 2, 3].map((k) => ({ name: `site-${k}`, trainer: quadratic() })),
    workspace: dirTs,
  });
  const mixed = await simulateInProcess({
    workflow: new Scaffold({ rounds: 4, minClients: 3, initialModel: init() }),
    sites: [
      { name: 'site-1', host: python() },
      { name: 'site-2', host: python() },
      { name: 'site-3', trainer: quadratic() },
    ],
    workspace: dirPy,
  });
  const a = [...(ts.model.get('w')!.data as Float32Array)];
  const b = [...(mixed.model.get('w')!.data as Float32Array)];
  a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) < 1e-5, `w[${i}]: TypeScript ${v}, Python ${b[i]}`));
  const cTs = (await readSafetensors(path.join(dirTs, 'server', 'round-3', 'scaffold_c.safetensors'))).tensors.get('w')!
    .data as Float32Array;
  const cPy = (await readSafetensors(path.join(dirPy, 'server', 'round-3', 'scaffold_c.safetensors'))).tensors.get('w')!
    .data as Float32Array;
  cTs.forEach((v, i) => assert.ok(Math.abs(v - cPy[i]!) < 1e-4, `c[${i}]: TypeScript ${v}, Python ${cPy[i]}`));
  // the variates did something: c is not zero, and the sites' pulls cancel into the mean target
  assert.ok(
    cTs.some((v) => Math.abs(v) > 0.01),
    `c = ${[...cTs]}`,
  );
  assert.deepEqual(
    mixed.rounds.map((x) => Object.keys(x.failures).length),
    [0, 0, 0, 0],
  );
});
