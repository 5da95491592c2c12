/**
 * Filters on the protein task (docs/examples/protein.md, "Filters"): FedAvg at Dirichlet α with
 * the sites' uploads quantized (float16, bfloat16, blockwise 8-bit, NF4) against float32, and
 * DP-FedAvg (dp_gaussian at every site, the noise multiplier derived from a target ε after all
 * rounds at δ = 1e-5) against no DP. The same trainer, split, initial weights and batch orders as
 * the FedAvg row of the protein page; prints one JSON object per run, then the tables, and with
 * --svg writes the accuracy-vs-ε plot.
 *
 *   nice -n 10 node --conditions=flotilla-source --import tsx examples/protein/src/privacy.ts --part quant,dp --alpha 1 --rounds 20
 *       [--epsilons 1,10,100,1000,10000] [--clip 1] [--svg docs/examples/protein/dp-accuracy.svg]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { FilterChain, FilterSpecSchema, builtinFilter, entryFor, noiseForEpsilon } from 'flotilla/filters';
import { simulateInProcess } from 'flotilla/simulator';
import { StrategyWorkflow, fedAvgStrategy } from 'flotilla/workflows';
import { NUM_CLASSES } from './deeploc.ts';
import { prepareData } from './data.ts';
import { CompositionFeaturizer } from './featurizer.ts';
import { score } from './metrics.ts';
import { Mlp, type MlpConfig, initBackend, initialWeights, subset } from './model.ts';
import { hashSeed } from './prng.ts';
import { dirichletSplit } from './split.ts';
import { PALETTE, lineChart } from './svg.ts';
import { proteinTrainer } from './trainer.ts';

const list = (v: string): string[] =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const program = new Command('protein-privacy')
  .option('--part <list>', 'quant and/or dp', 'quant,dp')
  .option('--alpha <x>', 'Dirichlet concentration', '1')
  .option('--seed <n>', 'seed (split, initial weights, batch order)', '1')
  .option('--sites <n>', 'sites', '3')
  .option('--rounds <n>', 'rounds', '20')
  .option('--local-epochs <n>', 'local epochs per round', '2')
  .option('--formats <list>', 'quant: uploads besides float32 (float16, bfloat16, int8, nf4, fp4)', 'float16,bfloat16,int8,nf4,fp4')
  .option('--epsilons <list>', 'dp: target ε after all rounds (δ = 1e-5)', '1,10,100,1000,10000')
  .option('--clip <x>', 'dp: L2 bound of a site update', '1')
  .option('--svg <file>', 'dp: write the accuracy-vs-ε plot here');

interface Run {
  part: string;
  setting: string;
  epsilon: number | null;
  noiseMultiplier: number | null;
  acc: number;
  f1: number;
  /** the global model's mean cross-entropy on the pooled held-out test set */
  loss: number;
  seconds: number;
}

function chain(raw: unknown[]): () => FilterChain {
  return () =>
    new FilterChain(
      raw.map((r, i) => {
        const spec = FilterSpecSchema.parse(r);
        if (spec.type === 'custom') throw new Error('no custom filters here');
        return entryFor(spec, `filters.${i} (${spec.type})`, builtinFilter(spec));
      }),
    );
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{
    part: string;
    alpha: string;
    seed: string;
    sites: string;
    rounds: string;
    localEpochs: string;
    formats: string;
    epsilons: string;
    clip: string;
    svg?: string;
  }>();
  const parts = list(o.part);
  const alpha = Number(o.alpha);
  const seed = Number(o.seed);
  const rounds = Number(o.rounds);
  const delta = 1e-5;
  await initBackend();
  const prep = await prepareData({ embedder: new CompositionFeaturizer(), seed: 1, heldOutFraction: 0.15 });
  const model: MlpConfig = { inputDim: prep.dim, hidden: [128], classes: NUM_CLASSES, dropout: 0.5 };
  const train = { localEpochs: Number(o.localEpochs), batchSize: 64, lr: 1e-3, weightDecay: 1e-3, classWeighted: false, proxMu: 0, seed };
  const split = dirichletSplit([...prep.train.y], { sites: Number(o.sites), alpha, seed: hashSeed(seed, 'split', alpha) }).map((idx) =>
    subset(prep.train, idx),
  );
  const init = initialWeights(model, hashSeed(seed, 'init'));
  const settings: { part: string; setting: string; filters: unknown[]; epsilon: number | null; noiseMultiplier: number | null }[] = [];
  const formats: Record<string, [string, object]> = {
    float16: ['float16', { bits: 16 }],
    bfloat16: ['bfloat16', { bits: 16, format: 'bfloat16' }],
    int8: ['blockwise 8-bit', { bits: 8 }],
    nf4: ['NF4', { bits: 4 }],
    fp4: ['FP4', { bits: 4, format: 'fp4' }],
  };
  // float32 (no filter) is the reference of both parts
  settings.push({ part: 'both', setting: 'float32, no DP', filters: [], epsilon: null, noiseMultiplier: null });
  if (parts.includes('quant'))
    for (const name of list(o.formats)) {
      const [setting, q] = formats[name] ?? [];
      if (!setting) throw new Error(`--formats: unknown format "${name}"`);
      settings.push({
        part: 'quant',
        setting,
        filters: [{ type: 'quantize', direction: 'result', ...q }],
        epsilon: null,
        noiseMultiplier: null,
      });
    }
  if (parts.includes('dp')) {
    for (const eps of list(o.epsilons).map(Number)) {
      const sigma = noiseForEpsilon(eps, rounds, delta);
      settings.push({
        part: 'dp',
        setting: `ε = ${eps}`,
        filters: [{ type: 'dp_gaussian', clip: Number(o.clip), noiseMultiplier: sigma, delta }],
        epsilon: eps,
        noiseMultiplier: sigma,
      });
    }
  }
  const root = await mkdtemp(path.join(os.tmpdir(), 'flotilla-protein-privacy-'));
  const runs: Run[] = [];
  try {
    for (const s of settings) {
      const t0 = performance.now();
      const result = await simulateInProcess({
        workflow: new StrategyWorkflow({ rounds, minClients: split.length, initialModel: init }, fedAvgStrategy),
        sites: split.map((data, i) => ({ name: `site-${i + 1}`, trainer: proteinTrainer({ data, model, train }) })),
        workspace: path.join(root, s.setting.replace(/\W+/g, '-')),
        ...(s.filters.length > 0 && { filters: chain(s.filters) }),
      });
      const mlp = new Mlp(model, result.model);
      const evaluated = mlp.evaluate(prep.test);
      const sc = score(prep.test.y, evaluated.pred, NUM_CLASSES);
      mlp.dispose();
      const run: Run = {
        part: s.part,
        setting: s.setting,
        epsilon: s.epsilon,
        noiseMultiplier: s.noiseMultiplier,
        acc: sc.accuracy,
        f1: sc.macroF1,
        loss: evaluated.loss,
        seconds: (performance.now() - t0) / 1000,
      };
      runs.push(run);
      console.log(JSON.stringify(run));
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  const f = (x: number): string => x.toFixed(3);
  const base = runs.find((r) => r.part === 'both');
  const quant = runs.filter((r) => r.part !== 'dp');
  if (parts.includes('quant')) {
    console.log(
      '\n| upload | test accuracy | macro-F1 | Δ accuracy vs float32 | test loss | Δ loss vs float32 | time (s) |\n|---|---:|---:|---:|---:|---:|---:|',
    );
    for (const r of quant)
      console.log(
        `| ${r.setting} | ${f(r.acc)} | ${f(r.f1)} | ${base ? `${((r.acc - base.acc) * 100).toFixed(1)} pp` : '–'} | ${r.loss.toFixed(4)} | ${base ? `${(((r.loss - base.loss) / base.loss) * 100).toFixed(2)} %` : '–'} | ${r.seconds.toFixed(0)} |`,
      );
  }
  const dp = runs.filter((r) => r.part !== 'quant');
  if (parts.includes('dp')) {
    console.log(`\n| ε (δ = 1e-5, after ${rounds} rounds) | noise multiplier σ | test accuracy | macro-F1 |\n|---|---:|---:|---:|`);
    for (const r of dp)
      console.log(`| ${r.epsilon ?? '∞ (no DP)'} | ${r.noiseMultiplier?.toPrecision(3) ?? '0'} | ${f(r.acc)} | ${f(r.f1)} |`);
    if (o.svg) {
      const pts = dp.filter((r) => r.epsilon !== null).map((r) => [Math.log10(r.epsilon!), r.acc] as const);
      const none = dp.find((r) => r.epsilon === null);
      const svg = lineChart({
        title: `DP-FedAvg on the protein task (α = ${alpha}, ${rounds} rounds, δ = 1e-5)`,
        xLabel: 'log10 ε',
        yLabel: 'test accuracy',
        series: [{ name: 'dp_gaussian', points: pts, color: PALETTE[0]! }],
        yMin: 0,
        yMax: 0.7,
        refLines: [...(none ? [{ y: none.acc, label: `no DP ${f(none.acc)}` }] : []), { y: 0.29, label: 'majority class 0.290' }],
      });
      await writeFile(o.svg, `${svg}\n`);
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e: unknown) => {
    console.error((e as Error).message);
    process.exit(1);
  });
}
