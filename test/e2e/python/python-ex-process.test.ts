/**
 * Real Python trainers (python/flotilla over the test Python (FLOTILLA_PYTHON, else Debian's /usr/bin/python3)) run by
 * the TypeScript ExProcessTrainerHost: values round-trip in every dtype, a
 * PyTorch script learns, a raising trainer fails its task with the Python
 * traceback, and a protocol mismatch is refused at init() on both sides.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { type ScalarRecord, isScalar, type TaskInput, type TrainerContext } from '../../../src/client/api.ts';
import { ExProcessTrainerHost, TrainerProcessError, TrainerTaskError } from '../../../src/client/host/process-host.ts';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../../src/core/dtypes.ts';
import { type FLModel, flModel } from '../../../src/core/fl-model.ts';
import { type Tensor, type TensorDict, f32, tensor } from '../../../src/core/tensor.ts';
import { siteData } from '../../../examples/hello-fedavg/data.ts';
import { initialModel } from '../../../examples/hello-fedavg/model.ts';
import { createTrainer } from '../../../examples/hello-fedavg/trainer.ts';
import { PYTHON } from '../../helpers/python.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const trainers = path.join(repoRoot, 'python/tests/trainers');
const example = path.join(repoRoot, 'examples/pytorch-fedavg');
const pythonEnv = { PYTHONPATH: path.join(repoRoot, 'python'), OMP_NUM_THREADS: '1', PYTHONDONTWRITEBYTECODE: '1' };

function pythonHas(module: string): boolean {
  const r = spawnSync(PYTHON, ['-c', `import ${module}`]);
  return !r.error && r.status === 0;
}

function requirePython(modules: string[]): void {
  const missing = modules.filter((m) => !pythonHas(m));
  if (missing.length)
    assert.fail(`${PYTHON} cannot import ${missing.join(', ')}: install with apt-get install -y python3-numpy python3-torch`);
}

let workspace = '';
before(() => {
  workspace = mkdtempSync(path.join(tmpdir(), 'flotilla-py-'));
});
after(() => rmSync(workspace, { recursive: true, force: true }));

function context(metrics: ScalarRecord[] = []): TrainerContext {
  return { siteName: 'site-2', jobId: 'job-py', workspace, onMetric: (m) => void (isScalar(m) && metrics.push(m)) };
}

function host(script: string, args: string[] = [], stderr: string[] = []): ExProcessTrainerHost {
  return new ExProcessTrainerHost({
    command: PYTHON,
    args: [script, ...args],
    cwd: path.dirname(script),
    env: pythonEnv,
    helloTimeoutMs: 30_000,
    stopTimeoutMs: 60_000, // the script exits by itself after the last task; a loaded machine may take a while
    logger: (line, stream) => {
      if (stream === 'stderr') stderr.push(line);
    },
  });
}

function task(i: number, params: TensorDict, taskName = 'train', totalRounds = 3): TaskInput {
  return { taskId: `t${i}`, taskName, model: flModel(params, { currentRound: i, totalRounds, meta: { round: i } }) };
}

/** One tensor of every dtype the protocol carries, with edge values. */
function everyDtype(): TensorDict {
  return new Map<string, Tensor>([
    ['f64', tensor('F64', [2, 2], Float64Array.from([0.5, -1e300, 1e-300, 3]))],
    ['f32', f32([3], [1.5, -2, 1e30])],
    ['f16', tensor('F16', [3], Uint16Array.from([0.5, -2, 1000].map(f32ToF16)))],
    ['bf16', tensor('BF16', [2], Uint16Array.from([1, -3].map(f32ToBf16)))],
    ['i64', tensor('I64', [2], BigInt64Array.from([-(2n ** 62n), 41n]))],
    ['i32', tensor('I32', [1, 2], Int32Array.from([-7, 2 ** 30]))],
    ['i16', tensor('I16', [2], Int16Array.from([-300, 300]))],
    ['i8', tensor('I8', [2], Int8Array.from([-100, 100]))],
    ['u8', tensor('U8', [3], Uint8Array.from([0, 254, 255]))],
    ['bool', tensor('BOOL', [2], Uint8Array.from([1, 0]))],
    ['scalar', f32([], [7])],
    ['empty', f32([0, 4], [])],
  ]);
}

describe('Python trainers through ExProcessTrainerHost', () => {
  it('numpy add-one trainer: every dtype round-trips over 3 tasks, with meta, metrics and logs', async () => {
    requirePython(['numpy']);
    const metrics: ScalarRecord[] = [];
    const h = host(path.join(trainers, 'add_one.py'));
    await h.start(context(metrics));
    let params = everyDtype();
    let last: FLModel | undefined;
    for (let i = 0; i < 3; i++) {
      last = await h.runTask(task(i, params));
      assert.equal(last.currentRound, i);
      assert.equal(last.totalRounds, 3);
      assert.deepEqual(last.metrics, { tensors: 12 });
      assert.deepEqual(last.meta, { site: 'site-2', job: 'job-py', task: 'train', NUM_STEPS_CURRENT_ROUND: 1 });
      params = last.params;
    }
    await h.stop();
    assert.deepEqual(h.exitStatus, { code: 0, signal: null });
    const get = (k: string): Tensor => params.get(k)!;
    assert.deepEqual([...params.keys()], [...everyDtype().keys()]);
    for (const [k, t] of everyDtype()) {
      assert.equal(get(k).dtype, t.dtype, k);
      assert.deepEqual(get(k).shape, t.shape, k);
    }
    assert.deepEqual([...(get('f64').data as Float64Array)], [3.5, -1e300 + 3, 3 + 1e-300, 6]);
    assert.deepEqual([...(get('f32').data as Float32Array)], [4.5, 1, Math.fround(1e30)]);
    assert.deepEqual([...(get('f16').data as Uint16Array)].map(f16ToF32), [3.5, 1, 1003]);
    assert.deepEqual([...(get('bf16').data as Uint16Array)].map(bf16ToF32), [4, 0]);
    assert.deepEqual([...(get('i64').data as BigInt64Array)], [-(2n ** 62n) + 3n, 44n]);
    assert.deepEqual([...(get('i32').data as Int32Array)], [-4, 2 ** 30 + 3]);
    assert.deepEqual([...(get('i16').data as Int16Array)], [-297, 303]);
    assert.deepEqual([...(get('i8').data as Int8Array)], [-97, 103]);
    assert.deepEqual([...(get('u8').data as Uint8Array)], [3, 1, 2]); // uint8 wraps, as in numpy
    assert.deepEqual([...(get('bool').data as Uint8Array)], [0, 1]); // negated 3 times
    assert.deepEqual([...(get('scalar').data as Float32Array)], [10]);
    assert.equal(get('empty').data.length, 0);
    assert.deepEqual(
      metrics.map(({ key, value, step, round, site }) => ({ key, value, step, round, site })),
      [0, 1, 2].map((i) => ({ key: 'round', value: i, step: i, round: i, site: 'site-2' })),
    );
  });

  it('the PyTorch example generates exactly the data of the TypeScript example', () => {
    requirePython(['numpy']);
    const code = `
import hashlib, numpy as np
from data import site_data
for i, s in [(0, "train"), (1, "val"), (2, "train")]:
    x, y = site_data(i, 600, s)
    print(hashlib.sha256(x.tobytes()).hexdigest(), hashlib.sha256(y.astype(np.int32).tobytes()).hexdigest())`;
    const r = spawnSync(PYTHON, ['-c', code], { cwd: example, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const sha = (a: ArrayBufferView): string =>
      createHash('sha256')
        .update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
        .digest('hex');
    const want = (
      [
        [0, 'train'],
        [1, 'val'],
        [2, 'train'],
      ] as const
    ).map(([i, s]) => {
      const d = siteData(i, 600, s);
      return `${sha(d.x)} ${sha(d.y)}`;
    });
    assert.deepEqual(r.stdout.trim().split('\n'), want);
  });

  it('PyTorch trainer (examples/pytorch-fedavg/train_fl.py): loss falls; evaluate and submit_model tasks; matches the tfjs trainer', async () => {
    requirePython(['numpy', 'torch']);
    const metrics: ScalarRecord[] = [];
    const h = host(path.join(example, 'train_fl.py'), ['--site-index', '0', '--out', path.join(workspace, 'model.pt')]);
    await h.start(context(metrics));
    const init = initialModel();
    const rounds: FLModel[] = [];
    let params = init;
    for (let i = 0; i < 4; i++) {
      const r = await h.runTask(task(i, params, 'train', 4));
      rounds.push(r);
      params = r.params;
    }
    // the global model scored by the site, before it trains on it (evaluate keeps the site's own weights)
    const evalInit = await h.runTask(task(4, init, 'validate'));
    const evalTrained = await h.runTask(task(5, params, 'validate'));
    const submitted = await h.runTask(task(6, new Map(), 'submit_model'));
    await h.stop();
    assert.deepEqual(h.exitStatus, { code: 0, signal: null });

    assert.deepEqual([...params.keys()], ['dense1.kernel', 'dense1.bias', 'dense2.kernel', 'dense2.bias']);
    for (const [k, t] of init) {
      assert.equal(params.get(k)!.dtype, 'F32');
      assert.deepEqual(params.get(k)!.shape, t.shape, k);
    }
    for (const r of rounds) assert.equal(r.meta.NUM_STEPS_CURRENT_ROUND, 38); // 2 epochs × ceil(600 / 32)
    const trainLoss = rounds.map((r) => r.metrics.train_loss!);
    const valLoss = rounds.map((r) => r.metrics.val_loss!);
    assert.ok(valLoss[3]! < valLoss[0]!, `val loss should fall: ${valLoss.join(', ')}`);
    assert.ok(trainLoss[3]! < trainLoss[0]!, `train loss should fall: ${trainLoss.join(', ')}`);
    assert.ok(evalTrained.metrics.val_loss! < evalInit.metrics.val_loss!, 'trained model scores better than the initial one');
    assert.ok(evalTrained.metrics.val_accuracy! > 0.7, `val accuracy ${evalTrained.metrics.val_accuracy}`);
    assert.equal(evalTrained.params.size, 0);
    assert.deepEqual([...submitted.params.keys()], [...params.keys()]);
    assert.deepEqual(submitted.params.get('dense1.bias')!.data, params.get('dense1.bias')!.data);
    assert.deepEqual(
      metrics.map((m) => [m.key, m.step]),
      [0, 1, 2, 3].map((i) => ['train_loss', i]),
    );

    // the tfjs trainer of hello-fedavg on the same tasks: same data, init and SGD, so the same model
    const ts = new InProcessTrainerHost(
      await createTrainer.create({
        site: 'site-1',
        siteIndex: 0,
        numSites: 1,
        args: createTrainer.schema.parse({}),
        jobDir: path.join(repoRoot, 'examples/hello-fedavg'),
      }),
    );
    await ts.start(context());
    let tsParams = init;
    const tsRounds: FLModel[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await ts.runTask(task(i, tsParams, 'train', 4));
      tsRounds.push(r);
      tsParams = r.params;
    }
    await ts.stop();
    let maxDiff = 0;
    for (const [k, t] of tsParams) {
      const a = t.data as Float32Array;
      const b = params.get(k)!.data as Float32Array;
      for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    }
    assert.ok(maxDiff < 1e-4, `PyTorch and tfjs models differ by ${maxDiff} after 4 rounds`);
    tsRounds.forEach((r, i) =>
      assert.ok(Math.abs(r.metrics.val_loss! - valLoss[i]!) < 1e-4, `round ${i}: val_loss ${r.metrics.val_loss} vs ${valLoss[i]}`),
    );
  });

  it('a raising trainer fails its task with the Python traceback, then exits 1', async () => {
    requirePython(['numpy']);
    const h = host(path.join(trainers, 'raising.py'));
    await h.start(context());
    await assert.rejects(h.runTask(task(0, new Map([['w', f32([2], [1, 2])]]))), (e: unknown) => {
      assert.ok(e instanceof TrainerTaskError, String(e));
      assert.match(e.message, /task "t0" \(train\) failed in the trainer: KeyError: 'missing.weight'/);
      assert.match(e.message, /raising\.py", line 7, in train_one_epoch/);
      assert.match(e.traceback ?? '', /^Traceback \(most recent call last\):/);
      return true;
    });
    await h.stop();
    assert.deepEqual(h.exitStatus, { code: 1, signal: null });
  });

  it('a protocol mismatch is refused at init(), with a clear message on both sides', async () => {
    requirePython(['numpy']);
    const stderr: string[] = [];
    const h = host(path.join(trainers, 'other_protocol.py'), [], stderr);
    await assert.rejects(h.start(context()), (e: unknown) => {
      assert.ok(e instanceof TrainerProcessError, String(e));
      assert.match(e.message, /trainer speaks protocol 2, client speaks 1/);
      return true;
    });
    const text = stderr.join('\n');
    assert.match(
      text,
      /ProtocolMismatchError: Flotilla protocol mismatch: this Python package \(flotilla, python\/\) speaks protocol version 2, the Flotilla client speaks version 1/,
    );
    assert.doesNotMatch(text, /should not get here/);
    assert.deepEqual(h.exitStatus, { code: 1, signal: null });
  });
});
