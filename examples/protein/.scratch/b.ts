import { runExperiment } from '../src/runner.ts';
const t0 = performance.now();
const r = await runExperiment({ alphas: [1], lengthSkew: false, sites: 3, rounds: Number(process.argv[2] ?? 3), localEpochs: Number(process.argv[3] ?? 1), hidden: [Number(process.argv[4] ?? 64)], dropout: 0.3, batchSize: 64, lr: 1e-3, weightDecay: 1e-4, classWeighted: false, proxMu: 0.1, seed: 1, heldOut: 0.15, cacheDir: 'examples/protein/.cache' });
console.log('majority', r.majority, 'total s', ((performance.now() - t0) / 1000).toFixed(1));
for (const m of r.settings[0]!.methods) console.log(m.name, m.test.accuracy.toFixed(3), m.hard.accuracy.toFixed(3), m.curve.map(([x, y]) => `${x}:${y.toFixed(3)}`).join(' '));
