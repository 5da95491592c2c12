// Server optimizers (FedOpt): each step against a direct element-wise computation of Reddi et
// al.'s update, in memory and on disk, and the state round-trip that makes a resumed job exact.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { ServerOptimizer, type ServerOptimizerInput, stepInMemory, stepOnDisk } from '../../../src/algorithms/server-optimizer.ts';
import { readSafetensors, writeSafetensors } from '../../../src/core/safetensors.ts';
import { type Tensor, type TensorDict, f32, tensor } from '../../../src/core/tensor.ts';

const f = Math.fround;

/** The optimizer's update written out directly, element by element (state stored as float32). */
function direct(cfg: Required<ServerOptimizerInput>, xs: number[][], ys: number[][]): number[][] {
  let x = xs[0]!.map(f);
  const n = x.length;
  const tau = 'tau' in cfg ? (cfg as { tau: number }).tau : 0;
  let m = new Array<number>(n).fill(0);
  let v = new Array<number>(n).fill(f(tau * tau));
  const out: number[][] = [];
  for (const yRound of ys) {
    const y = yRound.map(f);
    const next: number[] = [];
    const m2: number[] = [];
    const v2: number[] = [];
    for (let i = 0; i < n; i++) {
      const d = y[i]! - x[i]!;
      if (cfg.name === 'fedavgm') {
        m2[i] = f((cfg as { momentum: number }).momentum * m[i]! + d);
        next[i] = f(x[i]! + (cfg as { lr: number }).lr * m2[i]!);
        continue;
      }
      const c = cfg as { lr: number; beta1: number; beta2: number; tau: number };
      m2[i] = f(c.beta1 * m[i]! + (1 - c.beta1) * d);
      v2[i] = f(
        cfg.name === 'fedadagrad'
          ? v[i]! + d * d
          : cfg.name === 'fedadam'
            ? c.beta2 * v[i]! + (1 - c.beta2) * d * d
            : v[i]! - (1 - c.beta2) * d * d * Math.sign(v[i]! - d * d),
      );
      next[i] = f(x[i]! + (c.lr * m2[i]!) / (Math.sqrt(v2[i]!) + c.tau));
    }
    m = m2;
    v = v2;
    x = next;
    out.push(next);
  }
  return out;
}

const configs: Required<ServerOptimizerInput>[] = [
  { name: 'fedavgm', lr: 1, momentum: 0.9 },
  { name: 'fedadam', lr: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
  { name: 'fedyogi', lr: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
  { name: 'fedadagrad', lr: 0.1, beta1: 0, beta2: 0.99, tau: 1e-3 },
];

for (const cfg of configs) {
  test(`${cfg.name}: three steps equal the direct computation (fast-check)`, async () => {
    const vals = fc.array(fc.float({ min: -10, max: 10, noNaN: true, noDefaultInfinity: true }), { minLength: 3, maxLength: 3 });
    await fc.assert(
      fc.asyncProperty(fc.array(vals, { minLength: 4, maxLength: 4 }), async ([x0, ...ys]) => {
        const want = direct(cfg, [x0!], ys);
        const opt = new ServerOptimizer(cfg);
        let model: TensorDict = new Map<string, Tensor>([
          ['w', f32([3], x0!)],
          ['step', tensor('I64', [1], BigInt64Array.from([7n]))],
        ]);
        let state: { tensors: TensorDict; metadata: Record<string, string> } | null = null;
        for (let r = 0; r < ys.length; r++) {
          const agg: TensorDict = new Map<string, Tensor>([
            ['w', f32([3], ys[r]!)],
            ['step', tensor('I64', [1], BigInt64Array.from([BigInt(r + 8)]))],
          ]);
          const s = await stepInMemory(opt, model, agg, state);
          model = s.model;
          state = { tensors: s.state, metadata: s.stateMetadata };
          assert.deepEqual([...(model.get('w')!.data as Float32Array)], want[r]);
          // integer tensors are not optimized: they take the aggregate's value
          assert.equal((model.get('step')!.data as BigInt64Array)[0], BigInt(r + 8));
        }
        assert.equal(state!.metadata['flotilla.server_optimizer_steps'], '3');
      }),
      { numRuns: 40 },
    );
  });
}

test('on disk: the same model and state as in memory, and a resumed run continues exactly', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fedopt-'));
  try {
    const opt = new ServerOptimizer({ name: 'fedyogi', lr: 0.1 });
    const n = 200_000; // more than one chunk
    const x0 = f32(
      [n],
      Array.from({ length: n }, (_, i) => Math.sin(i)),
    );
    const aggs = [1, 2, 3].map((r) =>
      f32(
        [n],
        Array.from({ length: n }, (_, i) => Math.sin(i) + Math.cos(i * r) * 0.1),
      ),
    );
    // in memory, three steps straight
    let mem: TensorDict = new Map([['w', x0]]);
    let st: { tensors: TensorDict; metadata: Record<string, string> } | null = null;
    for (const a of aggs) {
      const s = await stepInMemory(opt, mem, new Map([['w', a]]), st);
      mem = s.model;
      st = { tensors: s.state, metadata: s.stateMetadata };
    }
    // on disk, stopping after each step and starting again from the files (a fresh optimizer each time)
    await writeSafetensors(join(dir, 'm0.safetensors'), new Map([['w', x0]]));
    for (let r = 0; r < 3; r++) {
      await writeSafetensors(join(dir, `a${r}.safetensors`), new Map([['w', aggs[r]!]]));
      await stepOnDisk(new ServerOptimizer({ name: 'fedyogi', lr: 0.1 }), {
        global: join(dir, `m${r}.safetensors`),
        aggregate: join(dir, `a${r}.safetensors`),
        state: r === 0 ? null : join(dir, `s${r - 1}.safetensors`),
        outModel: join(dir, `m${r + 1}.safetensors`),
        outState: join(dir, `s${r}.safetensors`),
      });
    }
    const disk = await readSafetensors(join(dir, 'm3.safetensors'));
    assert.deepEqual(disk.tensors.get('w')!.data, mem.get('w')!.data);
    const state = await readSafetensors(join(dir, 's2.safetensors'));
    assert.deepEqual(state.tensors.get('v.w')!.data, st!.tensors.get('v.w')!.data);
    assert.equal(state.metadata['flotilla.server_optimizer_steps'], '3');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a state written by another optimizer or for another model is refused with the reason', async () => {
  const model: TensorDict = new Map([['w', f32([2], [1, 2])]]);
  const s = await stepInMemory(new ServerOptimizer({ name: 'fedadam' }), model, model, null);
  await assert.rejects(
    stepInMemory(new ServerOptimizer({ name: 'fedyogi' }), model, model, { tensors: s.state, metadata: s.stateMetadata }),
    /written by fedadam, the job uses fedyogi/,
  );
  const other: TensorDict = new Map([['w', f32([3], [1, 2, 3])]]);
  await assert.rejects(
    stepInMemory(new ServerOptimizer({ name: 'fedadam' }), other, other, { tensors: s.state, metadata: s.stateMetadata }),
    /no F32 tensor "m.w" of shape \[3\]/,
  );
  assert.throws(() => new ServerOptimizer({ name: 'fedadam', beta2: 1 }));
});
