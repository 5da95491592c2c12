/**
 * The FL-algorithm comparison of docs/examples/protein-algorithms.md: FedAvg,
 * FedProx, SCAFFOLD, FedAvgM, FedAdam and FedYogi at Dirichlet α = 0.1, 1, 10
 * over several seeds (same budget: rounds × local epochs, same initial weights,
 * splits and batch orders per seed), and robust aggregation (mean, median,
 * trimmed mean, Krum, Multi-Krum) with one of the sites sending a sign-flipped,
 * scaled update. Every method runs the same Client API trainer (src/trainer.ts)
 * in the in-process simulator; prints one JSON object per run and a markdown
 * table at the end.
 *
 *   nice node --conditions=flotilla-source --import tsx examples/protein/src/algorithms.ts --part compare --alpha 0.1,1,10 --seeds 1,2
 *   nice node --conditions=flotilla-source --import tsx examples/protein/src/algorithms.ts --part robust --alpha 1 --seeds 1,2 --sites 5
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import type { RobustRuleInput } from 'flotilla/algorithms';
import type { ClientAPI, Trainer } from 'flotilla/client';
import type { FLModel } from 'flotilla/core';
import { type TensorDict, tensor } from 'flotilla/core';
import { simulateInProcess } from 'flotilla/simulator';
import { FedOpt } from 'flotilla/workflows';
import { Scaffold } from 'flotilla/workflows';
import { type StrategyOptions, StrategyWorkflow, fedAvgStrategy } from 'flotilla/workflows';
import { NUM_CLASSES } from './deeploc.ts';
import { prepareData } from './data.ts';
import { CompositionFeaturizer } from './featurizer.ts';
import { score } from './metrics.ts';
import { Mlp, type MlpConfig, initBackend, initialWeights, subset } from './model.ts';
import { hashSeed } from './prng.ts';
import { dirichletSplit } from './split.ts';
import { proteinTrainer } from './trainer.ts';

const list = (v: string): string[] =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
const program = new Command('protein-algorithms')
  .description('FedAvg vs FedProx / SCAFFOLD / FedOpt, and robust aggregation under one attacking site, on the protein task')
  .option('--part <name>', 'compare | robust', 'compare')
  .option('--alpha <list>', 'Dirichlet concentrations', '0.1,1,10')
  .option('--seeds <list>', 'seeds (split, initial weights, batch order)', '1,2')
  .option('--sites <n>', 'sites', '3')
  .option('--rounds <n>', 'rounds', '20')
  .option('--local-epochs <n>', 'local epochs per round', '2')
  .option('--methods <list>', 'compare: methods', 'fedavg,fedprox,scaffold,fedadam,fedyogi')
  .option('--attack-scale <x>', 'robust: the attacker sends x − scale·(y − x)', '10')
  .option('--clean-all', 'robust: also run every rule without the attacker (default: FedAvg only)', false)
  .option('--out <file>', 'write all results as JSON here')
  .option('--from <files>', 'print the tables of earlier runs from their logs (one JSON object per line), run nothing');

interface Run {
  part: string;
  method: string;
  alpha: number;
  seed: number;
  attack: boolean;
  acc: number;
  f1: number;
  seconds: number;
}

/** The attacker: trains honestly, then sends x − scale·(y − x) (a sign-flipped, scaled update). */
function flipping(inner: Trainer, scale: number): Trainer {
  return (flare: ClientAPI) => {
    let last: TensorDict | null = null;
    const proxy = new Proxy(flare, {
      get(target, prop, receiver) {
        if (prop === 'receive') {
          return async () => {
            const m = await target.receive();
            last = m?.params ?? null;
            return m;
          };
        }
        if (prop === 'send') {
          return async (m: FLModel) => {
            if (!last || m.params.size === 0) return target.send(m);
            const out: TensorDict = new Map();
            for (const [name, t] of m.params) {
              const x = last.get(name)!.data as Float32Array;
              const y = t.data as Float32Array;
              out.set(
                name,
                tensor(
                  'F32',
                  t.shape,
                  y.map((v, i) => x[i]! - scale * (v - x[i]!)),
                ),
              );
            }
            return target.send({ ...m, params: out });
          };
        }
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    return inner(proxy);
  };
}

function workflowFor(method: string, common: StrategyOptions): StrategyWorkflow {
  switch (method) {
    case 'fedavg':
    case 'centralized':
      return new StrategyWorkflow(common, fedAvgStrategy);
    case 'fedprox':
      return new StrategyWorkflow({ ...common, proxMu: 0.1 }, fedAvgStrategy);
    case 'scaffold':
      return new Scaffold(common);
    case 'fedavgm':
      return new FedOpt({ ...common, optimizer: { name: 'fedavgm', lr: 1, momentum: 0.9 } });
    case 'fedadam':
      return new FedOpt({ ...common, optimizer: { name: 'fedadam', lr: 0.01 } });
    case 'fedyogi':
      return new FedOpt({ ...common, optimizer: { name: 'fedyogi', lr: 0.01 } });
    case 'median':
      return new StrategyWorkflow({ ...common, aggregation: { rule: 'median' } }, fedAvgStrategy);
    case 'trimmed_mean':
      return new StrategyWorkflow({ ...common, aggregation: { rule: 'trimmed_mean', beta: 0.2 } }, fedAvgStrategy);
    case 'krum':
      return new StrategyWorkflow(
        { ...common, aggregation: { rule: 'krum', byzantine: 1, select: 1 } satisfies RobustRuleInput },
        fedAvgStrategy,
      );
    case 'multi_krum':
      return new StrategyWorkflow(
        { ...common, aggregation: { rule: 'krum', byzantine: 1, select: 3 } satisfies RobustRuleInput },
        fedAvgStrategy,
      );
  }
  throw new Error(`unknown method "${method}"`);
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts<{
    part: string;
    alpha: string;
    seeds: string;
    sites: string;
    rounds: string;
    localEpochs: string;
    methods: string;
    attackScale: string;
    cleanAll: boolean;
    out?: string;
    from?: string;
  }>();
  if (o.from) {
    const runs = list(o.from).flatMap((f) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Run),
    );
    for (const part of ['compare', 'robust']) {
      const rs = runs.filter((r) => r.part === part);
      if (rs.length) console.log(`\n${part} (${rs.length} runs)\n${table(rs, part === 'robust')}`);
    }
    return;
  }
  const alphas = list(o.alpha).map(Number);
  const seeds = list(o.seeds).map(Number);
  const sites = Number(o.sites);
  const rounds = Number(o.rounds);
  const localEpochs = Number(o.localEpochs);
  const robust = o.part === 'robust';
  const methods = robust ? ['fedavg', 'median', 'trimmed_mean', 'krum', 'multi_krum'] : list(o.methods);
  await initBackend();
  const prep = await prepareData({ embedder: new CompositionFeaturizer(), seed: 1, heldOutFraction: 0.15 });
  const model: MlpConfig = { inputDim: prep.dim, hidden: [128], classes: NUM_CLASSES, dropout: 0.5 };
  const train = { localEpochs, batchSize: 64, lr: 1e-3, weightDecay: 1e-3, classWeighted: false, proxMu: 0 };
  const runs: Run[] = [];
  const root = await mkdtemp(path.join(os.tmpdir(), 'flotilla-protein-alg-'));
  const labels = [...prep.train.y];
  try {
    // seeds outermost: a run cut short still has every setting for the first seeds
    for (const seed of seeds) {
      for (const alpha of alphas) {
        const split = dirichletSplit(labels, { sites, alpha, seed: hashSeed(seed, 'split', alpha) }).map((idx) => subset(prep.train, idx));
        const init = initialWeights(model, hashSeed(seed, 'init'));
        for (const attack of robust ? [false, true] : [false]) {
          for (const method of methods) {
            // the clean (no attack) reference of the robust part: FedAvg only, unless --clean-all
            if (robust && !attack && method !== 'fedavg' && !o.cleanAll) continue;
            // centralized: one site holding all training data (the same trainer, rounds and epochs)
            const parts = method === 'centralized' ? [prep.train] : split;
            const t0 = performance.now();
            const names = parts.map((_, i) => `site-${i + 1}`);
            const wf = workflowFor(method, { rounds, minClients: parts.length, initialModel: init });
            const result = await simulateInProcess({
              workflow: wf,
              sites: parts.map((data, i) => {
                const honest = proteinTrainer({ data, model, train: { ...train, seed } });
                return { name: names[i]!, trainer: attack && i === parts.length - 1 ? flipping(honest, Number(o.attackScale)) : honest };
              }),
              workspace: path.join(root, `${method}-${alpha}-${seed}-${attack}`),
            });
            const mlp = new Mlp(model, result.model);
            const s = score(prep.test.y, mlp.evaluate(prep.test).pred, NUM_CLASSES);
            mlp.dispose();
            const run: Run = {
              part: o.part,
              method,
              alpha,
              seed,
              attack,
              acc: s.accuracy,
              f1: s.macroF1,
              seconds: (performance.now() - t0) / 1000,
            };
            runs.push(run);
            console.log(JSON.stringify(run));
            await rm(path.join(root, `${method}-${alpha}-${seed}-${attack}`), { recursive: true, force: true });
          }
        }
      }
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  if (o.out) await writeFile(o.out, `${JSON.stringify(runs, null, 1)}\n`);
  console.log(table(runs, robust));
}

/** mean ± sample standard deviation over seeds */
function cell(xs: number[]): string {
  if (xs.length === 0) return '–';
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
  return xs.length > 1 ? `${m.toFixed(3)} ± ${sd.toFixed(3)} (n=${xs.length})` : `${m.toFixed(3)} (n=1)`;
}

export function table(runs: Run[], robust: boolean): string {
  const methods = [...new Set(runs.map((r) => r.method))];
  const alphas = [...new Set(runs.map((r) => r.alpha))];
  const cols = robust ? alphas.flatMap((a) => [false, true].map((attack) => ({ a, attack }))) : alphas.map((a) => ({ a, attack: false }));
  const head = `| method | ${cols.map((c) => `α = ${c.a}${robust ? (c.attack ? ', attacked' : ', no attack') : ''}`).join(' | ')} |`;
  const sep = `|---|${cols.map(() => '---:').join('|')}|`;
  const rows = methods.map(
    (m) =>
      `| ${m} | ${cols.map((c) => cell(runs.filter((r) => r.method === m && r.alpha === c.a && r.attack === c.attack).map((r) => r.acc))).join(' | ')} |`,
  );
  return [head, sep, ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e: unknown) => {
    console.error((e as Error).message);
    process.exit(1);
  });
}
