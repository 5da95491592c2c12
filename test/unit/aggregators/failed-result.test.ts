// A failed result contributes nothing: a result whose stream breaks off at 10 %, 50 % or 99 % of its
// bytes leaves the global model bit for bit as if it had never been sent, in memory (staged in
// memory, and spilled to disk with a tiny budget) and offloaded, for FULL and DIFF results and for
// float32 (float64 sums) and float64 (double-double sums) tensors. Staging files are removed.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { OffloadedAverage } from '../../../src/aggregators/offloaded-average.ts';
import { WeightedAverage } from '../../../src/aggregators/weighted-average.ts';
import type { ParamsType } from '../../../src/core/fl-model.ts';
import { readSafetensors, writeSafetensors } from '../../../src/core/safetensors.ts';
import { type TensorStream, dictToStream } from '../../../src/core/tensor-stream.ts';
import { type Tensor, type TensorDict, f32, numel } from '../../../src/core/tensor.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-failed-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function model(seed: number): TensorDict {
  const f64 = new Float64Array(1500);
  for (let i = 0; i < f64.length; i++) f64[i] = Math.sin(seed * 7.1 + i) * 1e3 + 1 / (i + seed + 1);
  return new Map<string, Tensor>([
    [
      'w',
      f32(
        [40, 50],
        Array.from({ length: 2000 }, (_, i) => Math.cos(seed + i * 0.37) * (seed + 1)),
      ),
    ],
    ['d', { dtype: 'F64' as const, shape: [1500], data: f64 }],
    ['b', f32([3], [seed, -seed, seed / 3])],
  ]);
}

const totalBytes = (d: TensorDict): number => [...d.values()].reduce((s, t) => s + numel(t.shape) * (t.dtype === 'F64' ? 8 : 4), 0);

/** `dict` as a stream of 256-byte pieces that breaks off once `cut` bytes went out (Infinity: whole). */
function cutStream(dict: TensorDict, cut: number): TensorStream {
  const s = dictToStream(dict, { chunkBytes: 256 });
  return {
    header: s.header,
    async *pieces() {
      let sent = 0;
      for await (const p of s.pieces()) {
        if (sent + p.bytes.byteLength > cut) throw new Error(`connection lost after ${sent} bytes`);
        sent += p.bytes.byteLength;
        yield p;
        await tick();
      }
    },
  };
}

type Kind = 'memory' | 'memory-spilled' | 'offload';

/** Aggregates r1, r2 (whole) and, concurrently, r3 cut at `cut` bytes; returns the mean and r3's outcome. */
async function aggregate(kind: Kind, cut: number | null, paramsType: ParamsType): Promise<{ mean: TensorDict; r3: string }> {
  const global = model(100);
  const streams = (agg: { add(s: TensorStream, w: number, t: ParamsType): Promise<void> }): Promise<PromiseSettledResult<void>[]> =>
    Promise.allSettled([
      agg.add(cutStream(model(1), Infinity), 1, paramsType),
      agg.add(cutStream(model(2), Infinity), 2.5, paramsType),
      ...(cut === null ? [] : [agg.add(cutStream(model(3), cut), 3, paramsType)]),
    ]);
  const stageDir = join(tmp, `stage-${kind}`);
  if (kind !== 'offload') {
    const agg = new WeightedAverage(global, { stageDir, stageMemoryBytes: kind === 'memory' ? 1 << 30 : 1000 });
    const settled = await streams(agg);
    if (existsSync(stageDir)) assert.deepEqual(readdirSync(stageDir), [], 'stage files removed');
    else assert.equal(kind, 'memory', 'a tiny memory budget spills to disk');
    return { mean: agg.result(), r3: settled[2]?.status ?? 'none' };
  }
  const gpath = join(tmp, 'global.safetensors');
  await writeSafetensors(gpath, global);
  const scratch = join(tmp, `scratch-${cut}-${paramsType}`);
  const agg = await OffloadedAverage.open(gpath, scratch);
  const settled = await streams(agg);
  const out = join(tmp, `mean-${cut}-${paramsType}.safetensors`);
  await agg.writeResult(out);
  assert.deepEqual(readdirSync(scratch), [], 'stage and accumulator files removed');
  return { mean: (await readSafetensors(out)).tensors, r3: settled[2]?.status ?? 'none' };
}

function bits(d: TensorDict): Record<string, string> {
  return Object.fromEntries([...d].map(([k, t]) => [k, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('hex')]));
}

for (const kind of ['memory', 'memory-spilled', 'offload'] as const) {
  for (const paramsType of ['FULL', 'DIFF'] as const) {
    test(`${kind}, ${paramsType}: a result cut at 10 %, 50 %, 99 % changes no bit of the global model; a whole one does`, async () => {
      const { mean: without } = await aggregate(kind, null, paramsType);
      const total = totalBytes(model(3));
      for (const fraction of [0.1, 0.5, 0.99]) {
        const { mean, r3 } = await aggregate(kind, Math.floor(total * fraction), paramsType);
        assert.equal(r3, 'rejected', `the cut result (${fraction}) fails its add()`);
        assert.deepEqual(bits(mean), bits(without), `cut at ${fraction * 100} %: the global model differs`);
      }
      // the control: the same result delivered whole moves every tensor
      const { mean: whole, r3 } = await aggregate(kind, Infinity, paramsType);
      assert.equal(r3, 'fulfilled');
      for (const [name, h] of Object.entries(bits(whole))) assert.notEqual(h, bits(without)[name], `${name} ignores a whole result`);
    });
  }
}
