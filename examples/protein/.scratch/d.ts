import { Mlp, initBackend, initialWeights, makeDataset } from '../src/model.ts';
import { Rng } from '../src/prng.ts';
import { accuracy } from '../src/metrics.ts';
await initBackend();
const r = new Rng(1);
const rows: Float32Array[] = []; const y: number[] = [];
for (let i = 0; i < 300; i++) { const c = i % 3; rows.push(Float32Array.from({ length: 8 }, (_, j) => (j % 3 === c ? 2 : 0) + r.normal())); y.push(c); }
const data = makeDataset(rows, y, 8);
const cfg = { inputDim: 8, hidden: [16], classes: 3, dropout: 0.2 };
const m = new Mlp(cfg, initialWeights(cfg, 1));
await m.train(data, { epochs: 20, batchSize: 32, lr: 0.01, weightDecay: 0, seed: 5, onEpoch: (e, l) => console.log(e, l.toFixed(3), accuracy(data.y, m.evaluate(data).pred)) });
console.log(m.evaluate(data).pred.slice(0, 20));
const a = new Mlp(cfg, initialWeights(cfg, 1));
const b = new Mlp(cfg, initialWeights(cfg, 1));
await a.train(data, { epochs: 3, batchSize: 32, lr: 0.01, weightDecay: 0, seed: 5 });
console.log('a after own train', accuracy(data.y, a.evaluate(data).pred));
await b.train(data, { epochs: 3, batchSize: 32, lr: 0.01, weightDecay: 0, seed: 5 });
console.log('a after b train', accuracy(data.y, a.evaluate(data).pred), 'b', accuracy(data.y, b.evaluate(data).pred));
