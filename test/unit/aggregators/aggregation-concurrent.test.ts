// Concurrent results: both aggregators read every result as it arrives (never result by result,
// so no sender is left unread long enough to stall) and give the same weighted mean as serial adds.
// A result that breaks off mid-stream counts for nothing: both stage a result while it arrives and
// fold it only once it has ended (failed-result.test.ts cuts results at several points).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { OffloadedAverage } from '../../../src/aggregators/offloaded-average.ts';
import { WeightedAverage } from '../../../src/aggregators/weighted-average.ts';
import { readSafetensors, writeSafetensors } from '../../../src/core/safetensors.ts';
import { type TensorStream, dictToStream } from '../../../src/core/tensor-stream.ts';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-aggc-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const SIZES = { a: 3000, b: 5000, c: 7 } as const;
const model = (f: (name: string, i: number) => number): TensorDict =>
  new Map(
    Object.entries(SIZES).map(([name, n]) => [
      name,
      f32(
        [n],
        Array.from({ length: n }, (_, i) => f(name, i)),
      ),
    ]),
  );

/** A result arriving slowly in 1 KiB pieces; `log` records each piece taken; `breakAfter` pieces, it fails. */
function slow(dict: TensorDict, tag: string, log: string[], breakAfter = Infinity): TensorStream {
  const s = dictToStream(dict, { chunkBytes: 1024 });
  return {
    header: s.header,
    async *pieces() {
      let k = 0;
      for await (const p of s.pieces()) {
        if (k++ === breakAfter) throw new Error(`${tag}: connection lost`);
        log.push(tag);
        yield p;
        await tick();
      }
      log.push(`${tag}:end`);
    },
  };
}

const results = [
  { tag: 'r1', w: 1, dict: model((n, i) => i + 1) },
  { tag: 'r2', w: 2, dict: model((n, i) => -i) },
  { tag: 'r3', w: 3, dict: model((n, i) => (n === 'c' ? 100 : 0.5 * i)) },
];
const global = model(() => 7);

async function check(kind: 'memory' | 'offload'): Promise<void> {
  const log: string[] = [];
  let mean: TensorDict;
  const adds = (agg: { add: WeightedAverage['add'] }): Promise<PromiseSettledResult<void>[]> =>
    Promise.allSettled([
      agg.add(slow(results[0]!.dict, 'r1', log), 1, 'FULL'),
      agg.add(slow(results[1]!.dict, 'r2', log), 2, 'FULL'),
      // breaks in tensor b (after a's 12 pieces and 3 of b's): nothing of it counts
      agg.add(slow(results[2]!.dict, 'r3', log, 15), 3, 'FULL'),
    ]);
  if (kind === 'memory') {
    const agg = new WeightedAverage(global);
    const settled = await adds(agg);
    assert.deepEqual(
      settled.map((s) => s.status),
      ['fulfilled', 'fulfilled', 'rejected'],
    );
    mean = agg.result();
  } else {
    const gpath = join(tmp, 'global.safetensors');
    await writeSafetensors(gpath, global);
    const agg = await OffloadedAverage.open(gpath, join(tmp, 'scratch'));
    const settled = await adds(agg);
    assert.deepEqual(
      settled.map((s) => s.status),
      ['fulfilled', 'fulfilled', 'rejected'],
    );
    const out = join(tmp, `mean-${kind}.safetensors`);
    await agg.writeResult(out);
    mean = (await readSafetensors(out)).tensors;
  }
  // every result was being read before the first one ended: turns are per tensor, not per result
  const firstEnd = log.findIndex((e) => e.endsWith(':end'));
  const before = log.slice(0, firstEnd);
  for (const tag of ['r1', 'r2'])
    assert.ok(before.filter((e) => e === tag).length > 12, `${tag} waited for a whole result: ${before.join(' ')}`);
  for (const [name, n] of Object.entries(SIZES)) {
    const got = mean.get(name)!.data as Float32Array;
    for (let i = 0; i < n; i++) {
      const used = results.slice(0, 2);
      const W = used.reduce((s, r) => s + r.w, 0);
      const want = used.reduce((s, r) => s + r.w * (r.dict.get(name)!.data as Float32Array)[i]!, 0) / W;
      assert.ok(Math.abs(got[i]! - want) <= 1e-4 * Math.max(1, Math.abs(want)), `${kind} ${name}[${i}]: ${got[i]} vs ${want}`);
    }
  }
}

test('WeightedAverage: concurrent results fold as they arrive, equal the weighted mean, a broken one counts for nothing', () =>
  check('memory'));
test('OffloadedAverage: concurrent results interleave per tensor, equal the weighted mean, a broken one counts for nothing', () =>
  check('offload'));
