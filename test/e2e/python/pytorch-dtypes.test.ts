/**
 * Issue 20's mixed-dtype round trip: a real PyTorch module (float32, float64, float16, bfloat16,
 * int64 num_batches_tracked and position ids above 2^24, an int64 beyond 2^53, int32 at its
 * extremes, bool) through one FedAvg round in the simulator. One site at weight 1 and at weight 7
 * gets every tensor back bit for bit; two training sites get exactly the documented rule
 * (docs/aggregation.md), checked against the BigInt reference from what each site sent. The
 * initial model's metadata is in the global model. In memory and offloaded.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import type { TensorDict } from '../../../src/core/tensor.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { type Value, assertRule, exactOf } from '../../helpers/exact-rule.ts';
import { PYTHON } from '../../helpers/python.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const fixture = path.join(repoRoot, 'test/fixtures/pytorch-dtypes');
const env = { PYTHONPATH: `${path.join(repoRoot, 'python')}:${fixture}`, OMP_NUM_THREADS: '1' };

let tmp = '';
let initial: { tensors: TensorDict; metadata: Record<string, string> };
before(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), 'flotilla-ptdtypes-'));
  const r = spawnSync(PYTHON, [path.join(fixture, 'mixed.py'), path.join(tmp, 'initial_model.safetensors')], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, `${PYTHON} mixed.py: ${r.stderr || r.error?.message} (needs python3-torch: apt-get install -y python3-torch)`);
  initial = await readSafetensors(path.join(tmp, 'initial_model.safetensors'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

async function run(
  name: string,
  clients: number,
  weights: string,
  mode: 'echo' | 'train',
  offload: boolean,
): Promise<{ global: TensorDict; metadata: Record<string, string>; sent: TensorDict[] }> {
  const job = path.join(tmp, name);
  mkdirSync(job);
  copyFileSync(path.join(tmp, 'initial_model.safetensors'), path.join(job, 'initial_model.safetensors'));
  writeFileSync(
    path.join(job, 'job.json'),
    JSON.stringify({
      name,
      minClients: clients,
      model: { path: 'initial_model.safetensors' },
      workflows: [{ type: 'fedavg', rounds: 1, offload }],
      executor: {
        script: {
          command: PYTHON,
          args: [path.join(fixture, 'trainer.py'), '--site-index', '{siteIndex}', '--weights', weights, '--mode', mode],
          env,
        },
      },
    }),
  );
  const r = await simulate({ jobDir: job, clients, workspace: path.join(tmp, `${name}-ws`) });
  assert.deepEqual(r.rounds[0]!.failures, {});
  const { tensors: global, metadata } = await readSafetensors(path.join(r.workspace, 'server', 'round-0', 'global_model.safetensors'));
  const sent = await Promise.all(
    Array.from(
      { length: clients },
      async (_, i) => (await readSafetensors(path.join(r.workspace, `site-${i + 1}`, 'sent.safetensors'))).tensors,
    ),
  );
  return { global, metadata, sent };
}

const bytes = (d: TensorDict, name: string): Buffer => {
  const t = d.get(name)!.data as Uint8Array;
  return Buffer.from(t.buffer, t.byteOffset, t.byteLength);
};

function assertSame(got: TensorDict, want: TensorDict, what: string): void {
  assert.deepEqual([...got.keys()], [...want.keys()], what);
  for (const [name, t] of want) {
    assert.equal(got.get(name)!.dtype, t.dtype, `${what} ${name}`);
    assert.ok(
      bytes(got, name).equals(bytes(want, name)),
      `${what}: ${name} (${t.dtype}) changed: ${String([...(got.get(name)!.data as unknown as Value[])])} vs ${String([...(t.data as unknown as Value[])])}`,
    );
  }
}

describe('a PyTorch state_dict of every dtype through one FedAvg round', () => {
  for (const offload of [false, true]) {
    const how = offload ? 'offloaded' : 'in memory';
    it(`${how}: one site at weight 1 and at weight 7 returns every tensor bit for bit, with the initial metadata`, async () => {
      for (const w of ['1', '7']) {
        const r = await run(`echo-${w}-${offload}`, 1, w, 'echo', offload);
        assertSame(r.sent[0]!, initial.tensors, 'what the site sent');
        assertSame(r.global, initial.tensors, `weight ${w}`);
        assert.equal(r.metadata.format, 'pt');
        assert.equal(r.metadata.model, 'Mixed');
        assert.equal(r.metadata.round, '0');
      }
      // the cases issue 20 found
      assert.equal((initial.tensors.get('position_ids')!.data as BigInt64Array)[0], 123456789n);
      assert.equal((initial.tensors.get('int32')!.data as Int32Array)[0], 2147483647);
    });

    it(`${how}: two training sites (weights 1 and 7) give exactly the documented rule for every tensor`, async () => {
      const r = await run(`train-${offload}`, 2, '1,7', 'train', offload);
      const weights = [1n, 7n];
      for (const [name, t] of initial.tensors) {
        const got = r.global.get(name)!;
        assert.equal(got.dtype, t.dtype, name);
        const n = (t.data as unknown as Value[]).length;
        for (let i = 0; i < n; i++) {
          let S = 0n;
          r.sent.forEach((s, k) => (S += weights[k]! * exactOf(t.dtype, (s.get(name)!.data as unknown as Value[])[i]!)));
          assertRule(t.dtype, (got.data as unknown as Value[])[i]!, S, 8n, `${how} ${name}[${i}]`);
        }
      }
      // the counters moved by one at each site and agree: exact; the int64 beyond 2^53 moved by 0 and 1: (x + 7(x + 1)) / 8, ties to even
      assert.equal((r.global.get('bn.num_batches_tracked')!.data as BigInt64Array)[0], 2n ** 24n + 4n);
      assert.deepEqual([...(r.global.get('big64')!.data as BigInt64Array)], [2n ** 62n + 2n, -(2n ** 53n)]);
      assert.deepEqual([...(r.global.get('int32')!.data as Int32Array)], [2147483647, -2147483648, 7]);
      // the mask: site-2 (weight 7) turned element 0 off
      assert.deepEqual([...(r.global.get('mask')!.data as Uint8Array)], [0, 0, 1]);
      assert.equal(r.metadata.model, 'Mixed');
    });
  }
});
