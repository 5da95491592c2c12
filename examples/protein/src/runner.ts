/**
 * The experiment: for each heterogeneity setting (Dirichlet alpha, or length
 * skew) split the training pool over n sites and compare each site alone,
 * centralized training on the pooled data, FedAvg and FedProx, all from the
 * same initial weights and with the same number of epochs over each site's data.
 * Every method runs the same Client API trainer (src/trainer.ts) in the
 * in-process simulator: local-only and centralized are one-site federations.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TensorDict } from 'flotilla/core';
import { simulateInProcess } from 'flotilla/simulator';
import { StrategyWorkflow, fedAvgStrategy } from 'flotilla/workflows';
import { NUM_CLASSES, droppedSummary } from './deeploc.ts';
import { type PreparedData, prepareData } from './data.ts';
import type { Embedder } from './embedder.ts';
import { CompositionFeaturizer } from './featurizer.ts';
import { type Scores, majorityRate, score } from './metrics.ts';
import { type Dataset, Mlp, type MlpConfig, initBackend, initialWeights, subset } from './model.ts';
import { hashSeed } from './prng.ts';
import { dirichletSplit, formatHistogram, histogram, labelSkew, lengthSplit } from './split.ts';
import { type LocalTrainConfig, proteinTrainer } from './trainer.ts';

export interface ExperimentConfig {
  /** Dirichlet label-skew settings to run */
  alphas: number[];
  /** also run the sequence-length skew split */
  lengthSkew: boolean;
  sites: number;
  rounds: number;
  localEpochs: number;
  hidden: number[];
  dropout: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  classWeighted: boolean;
  proxMu: number;
  seed: number;
  heldOut: number;
  /** simulator workspace root; a temporary directory (removed afterwards) when absent */
  workspace?: string;
  dataDir?: string;
  cacheDir?: string;
  embedder?: Embedder;
  log?: (line: string) => void;
}

export type MethodKind = 'local' | 'central' | 'fedavg' | 'fedprox';

export interface MethodResult {
  name: string;
  kind: MethodKind;
  /** training samples this model saw */
  samples: number;
  test: Scores;
  hard: Scores;
  /** shared-test accuracy of the model each round started from, then of the final model (local/central: one-site rounds of localEpochs epochs) */
  curve: Array<[number, number]>;
  seconds: number;
}

export interface SettingResult {
  key: string;
  title: string;
  alpha?: number;
  siteNames: string[];
  histograms: number[][];
  histogramText: string;
  skew: number;
  methods: MethodResult[];
  /** this setting's own time (local, FedAvg, FedProx), without the shared centralized run */
  seconds: number;
}

export interface ExperimentResult {
  config: Omit<ExperimentConfig, 'log' | 'embedder'> & { embedder: string };
  data: {
    poolSize: number;
    train: number;
    test: number;
    hard: number;
    dim: number;
    dropped: string[];
    embedSeconds: number;
    cacheHit: boolean;
  };
  majority: { test: number; hard: number };
  central: MethodResult;
  settings: SettingResult[];
  seconds: number;
}

function evaluate(mlp: Mlp, d: Dataset): Scores {
  return score(d.y, mlp.evaluate(d).pred, NUM_CLASSES);
}

function trainConfig(cfg: ExperimentConfig, proxMu: number): LocalTrainConfig {
  return {
    localEpochs: cfg.localEpochs,
    batchSize: cfg.batchSize,
    lr: cfg.lr,
    weightDecay: cfg.weightDecay,
    classWeighted: cfg.classWeighted,
    proxMu,
    seed: cfg.seed,
  };
}

/**
 * Runs one method through the Client API: the protein trainer at every site of
 * an in-process simulation, FedAvg over `rounds` rounds of `localEpochs`
 * epochs. Local-only and centralized training are the one-site case (one site
 * holding that site's data, or all training data), so every method shares this
 * code path, the same epochs and steps, and the same Adam reset each round.
 * FedProx adds the proximal term on the clients.
 */
async function trainSites(
  name: string,
  kind: MethodKind,
  parts: Dataset[],
  siteNames: string[],
  init: TensorDict,
  model: MlpConfig,
  cfg: ExperimentConfig,
  prep: PreparedData,
  workspace: string,
): Promise<MethodResult> {
  const started = performance.now();
  // FedProx is a job setting: μ reaches the trainers in the task's meta
  const workflow = new StrategyWorkflow(
    { rounds: cfg.rounds, minClients: parts.length, initialModel: init, ...(kind === 'fedprox' && { proxMu: cfg.proxMu }) },
    fedAvgStrategy,
  );
  const train = trainConfig(cfg, 0);
  const result = await simulateInProcess({
    workflow,
    sites: parts.map((data, s) => ({ name: siteNames[s]!, trainer: proteinTrainer({ data, evalSet: prep.test, model, train }) })),
    workspace,
  });
  // each round's trainers scored the model they received: the aggregate of the round before
  const curve: Array<[number, number]> = [];
  for (const r of result.rounds) {
    const acc = r.siteMetrics[siteNames[0]!]?.['global_test_acc'];
    if (acc !== undefined) curve.push([r.round, acc]);
  }
  const mlp = new Mlp(model, result.model);
  try {
    const test = evaluate(mlp, prep.test);
    curve.push([cfg.rounds, test.accuracy]);
    return {
      name,
      kind,
      samples: parts.reduce((n, p) => n + p.n, 0),
      test,
      hard: evaluate(mlp, prep.hard),
      curve,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    mlp.dispose();
  }
}

export async function runExperiment(cfg: ExperimentConfig): Promise<ExperimentResult> {
  const log = cfg.log ?? ((l: string) => console.log(l));
  const started = performance.now();
  await initBackend();
  const embedder = cfg.embedder ?? new CompositionFeaturizer();
  const prep = await prepareData({
    embedder,
    seed: cfg.seed,
    heldOutFraction: cfg.heldOut,
    ...(cfg.dataDir !== undefined && { dataDir: cfg.dataDir }),
    ...(cfg.cacheDir !== undefined && { cacheDir: cfg.cacheDir }),
  });
  const dropped = droppedSummary(prep.dropped);
  log(
    `data: ${prep.poolSize} pooled sequences → ${prep.train.n} train + ${prep.test.n} held-out test; setHARD ${prep.hard.n}; dropped: ${dropped.join('; ') || 'none'}`,
  );
  log(
    `features: ${prep.embedder} (${prep.dim} dims) ${prep.cacheHit ? 'from cache' : 'computed'} in ${prep.embedSeconds.toFixed(1)} s (${prep.cacheFile})`,
  );
  const majority = {
    test: majorityRate(prep.train.y, prep.test.y, NUM_CLASSES),
    hard: majorityRate(prep.train.y, prep.hard.y, NUM_CLASSES),
  };

  const model: MlpConfig = { inputDim: prep.dim, hidden: cfg.hidden, classes: NUM_CLASSES, dropout: cfg.dropout };
  const init = initialWeights(model, hashSeed(cfg.seed, 'init'));
  const ownWorkspace = cfg.workspace === undefined;
  const wsRoot = cfg.workspace ?? (await mkdtemp(path.join(os.tmpdir(), 'flotilla-protein-')));
  try {
    const central = await trainSites(
      'centralized',
      'central',
      [prep.train],
      ['centralized'],
      init,
      model,
      cfg,
      prep,
      path.join(wsRoot, 'centralized'),
    );
    log(
      `centralized: test acc ${central.test.accuracy.toFixed(3)}, macro-F1 ${central.test.macroF1.toFixed(3)} (${central.seconds.toFixed(1)} s)`,
    );

    const settings: Array<{ key: string; title: string; alpha?: number; parts: number[][] }> = [];
    const trainLabels = [...prep.train.y];
    for (const alpha of cfg.alphas) {
      settings.push({
        key: `alpha-${alpha}`,
        title: `Dirichlet label skew, alpha = ${alpha}`,
        alpha,
        parts: dirichletSplit(trainLabels, { sites: cfg.sites, alpha, seed: hashSeed(cfg.seed, 'split', alpha) }),
      });
    }
    if (cfg.lengthSkew)
      settings.push({
        key: 'length',
        title: 'Sequence-length skew (site 1 shortest … site n longest)',
        parts: lengthSplit(prep.trainLengths, cfg.sites, hashSeed(cfg.seed, 'length')),
      });

    const results: SettingResult[] = [];
    for (const s of settings) {
      const t0 = performance.now();
      const siteNames = s.parts.map((_, i) => `site-${i + 1}`);
      const histogramText = formatHistogram(trainLabels, s.parts, siteNames);
      const skew = labelSkew(trainLabels, s.parts);
      log(`\n== ${s.title} (label skew TV = ${skew.toFixed(3)})\n${histogramText}`);
      const parts = s.parts.map((idx) => subset(prep.train, idx));
      const methods: MethodResult[] = [];
      for (let i = 0; i < parts.length; i++) {
        const r = await trainSites(
          `local ${siteNames[i]}`,
          'local',
          [parts[i]!],
          [siteNames[i]!],
          init,
          model,
          cfg,
          prep,
          path.join(wsRoot, `${s.key}-local-${siteNames[i]}`),
        );
        methods.push(r);
        log(
          `  local ${siteNames[i]} (${parts[i]!.n} samples): test acc ${r.test.accuracy.toFixed(3)}, F1 ${r.test.macroF1.toFixed(3)} (${r.seconds.toFixed(1)} s)`,
        );
      }
      methods.push(central);
      for (const kind of ['fedavg', 'fedprox'] as const) {
        const name = kind === 'fedavg' ? 'FedAvg' : `FedProx (mu=${cfg.proxMu})`;
        const r = await trainSites(name, kind, parts, siteNames, init, model, cfg, prep, path.join(wsRoot, `${s.key}-${kind}`));
        methods.push(r);
        log(`  ${name}: test acc ${r.test.accuracy.toFixed(3)}, F1 ${r.test.macroF1.toFixed(3)} (${r.seconds.toFixed(1)} s)`);
      }
      const seconds = (performance.now() - t0) / 1000;
      log(`  setting time ${seconds.toFixed(1)} s (+ centralized ${central.seconds.toFixed(1)} s shared)`);
      results.push({
        key: s.key,
        title: s.title,
        ...(s.alpha !== undefined && { alpha: s.alpha }),
        siteNames,
        histograms: s.parts.map((p) => histogram(trainLabels, p)),
        histogramText,
        skew,
        methods,
        seconds,
      });
    }
    const { log: _log, embedder: _e, ...rest } = cfg;
    return {
      config: { ...rest, embedder: prep.embedder },
      data: {
        poolSize: prep.poolSize,
        train: prep.train.n,
        test: prep.test.n,
        hard: prep.hard.n,
        dim: prep.dim,
        dropped,
        embedSeconds: prep.embedSeconds,
        cacheHit: prep.cacheHit,
      },
      majority,
      central,
      settings: results,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    if (ownWorkspace) await rm(wsRoot, { recursive: true, force: true });
  }
}

/** Mean test accuracy of the local-only models of a setting. */
export function meanLocal(s: SettingResult, field: 'accuracy' | 'macroF1' = 'accuracy', set: 'test' | 'hard' = 'test'): number {
  const locals = s.methods.filter((m) => m.kind === 'local');
  return locals.reduce((a, m) => a + m[set][field], 0) / Math.max(1, locals.length);
}
