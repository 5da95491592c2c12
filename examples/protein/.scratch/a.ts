import { loadDeepLoc, droppedSummary, heldOutSplit, classCounts } from '../src/deeploc.ts';
import { featurize } from '../src/featurizer.ts';
import { dirichletSplit, formatHistogram, labelSkew, lengthSplit } from '../src/split.ts';
const t0 = performance.now();
const d = await loadDeepLoc();
console.log('load ms', performance.now() - t0, d.pool.length, d.hard.length, droppedSummary(d.dropped));
const t1 = performance.now();
for (const s of [...d.pool, ...d.hard]) featurize(s.sequence);
console.log('featurize ms', performance.now() - t1);
const labels = d.pool.map((s) => s.label);
const { train, test } = heldOutSplit(labels, 0.15, 1);
console.log(train.length, test.length, classCounts(test.map((i) => labels[i]!)));
const tl = train.map((i) => labels[i]!);
for (const alpha of [0.1, 1, 10]) {
  const parts = dirichletSplit(tl, { sites: 3, alpha, seed: 7 });
  console.log('alpha', alpha, 'skew', labelSkew(tl, parts).toFixed(3));
  console.log(formatHistogram(tl, parts));
}
const lp = lengthSplit(train.map((i) => d.pool[i]!.sequence.length), 3, 7);
console.log('length skew', labelSkew(tl, lp).toFixed(3)); console.log(formatHistogram(tl, lp));
