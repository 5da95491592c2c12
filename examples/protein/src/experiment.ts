/**
 * CLI: federated protein subcellular-location experiment.
 *
 *   nice node --conditions=flotilla-source --import tsx examples/protein/src/experiment.ts --alpha 0.1,1,10 --sites 3 --rounds 20 --local-epochs 2
 *   node --conditions=flotilla-source --import tsx examples/protein/src/experiment.ts --quick        # ~1 minute smoke run, writes no doc
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { z } from 'zod';
import type { Embedder } from './embedder.ts';
import { EsmEmbedder } from './esm.ts';
import { CompositionFeaturizer } from './featurizer.ts';
import { writeReport } from './report.ts';
import { type ExperimentConfig, meanLocal, runExperiment } from './runner.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function numberList(flag: string, positive = true) {
  return (v: string): number[] => {
    const xs = v.split(',').map((s) => Number(s.trim()));
    if (xs.length === 0 || xs.some((x) => !Number.isFinite(x) || (positive && x <= 0)))
      throw new InvalidArgumentError(`${flag} must be a comma-separated list of positive numbers, got "${v}"`);
    return xs;
  };
}
function int(flag: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${flag} must be an integer ≥ ${min}, got "${v}"`);
    return n;
  };
}
function num(flag: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${flag} must be a number ≥ ${min}, got "${v}"`);
    return n;
  };
}

const OptionsSchema = z.object({
  alpha: z.array(z.number().positive()),
  lengthSkew: z.boolean(),
  sites: z.number().int().min(1),
  rounds: z.number().int().min(1),
  localEpochs: z.number().int().min(1),
  hidden: z.array(z.number().int().positive()),
  dropout: z.number().min(0).max(0.95),
  lr: z.number().positive(),
  weightDecay: z.number().min(0),
  batchSize: z.number().int().min(1),
  classWeighted: z.boolean(),
  mu: z.number().min(0),
  seed: z.number().int().min(0),
  heldOut: z.number().gt(0).lt(1),
  quick: z.boolean(),
  doc: z.union([z.string(), z.literal(false)]).optional(),
  embedder: z.enum(['composition', 'esm']),
  esmDir: z.string().optional(),
  esmRuntime: z.enum(['onnxruntime-node', '@huggingface/transformers']),
  workspace: z.string().optional(),
  dataDir: z.string().optional(),
  cacheDir: z.string().optional(),
});

const program = new Command('protein-experiment')
  .description('DeepLoc subcellular location: local-only vs centralized vs FedAvg vs FedProx over heterogeneous site splits')
  .option('--alpha <list>', 'Dirichlet label-skew concentrations', numberList('--alpha'), [0.1, 1, 10])
  .option('--no-length-skew', 'skip the sequence-length skew split')
  .option('--sites <n>', 'number of sites', int('--sites', 1), 3)
  .option('--rounds <n>', 'FL rounds', int('--rounds', 1), 20)
  .option('--local-epochs <n>', 'local epochs per round', int('--local-epochs', 1), 2)
  .option('--hidden <list>', 'hidden layer sizes', numberList('--hidden'), [128])
  .option('--dropout <p>', 'dropout after each hidden layer', num('--dropout', 0), 0.5)
  .option('--lr <x>', 'Adam learning rate', num('--lr', 0), 1e-3)
  .option('--weight-decay <x>', 'L2 penalty on kernels', num('--weight-decay', 0), 1e-3)
  .option('--batch-size <n>', 'minibatch size', int('--batch-size', 1), 64)
  .option('--class-weighted', 'weight the loss by inverse class frequency (per site)', false)
  .option('--mu <x>', 'FedProx proximal coefficient', num('--mu', 0), 0.1)
  .option('--seed <n>', 'seed for every random choice', int('--seed', 0), 1)
  .option('--held-out <f>', 'fraction of the pool held out as the shared test set', num('--held-out', 0), 0.15)
  .option('--quick', 'smoke run: alpha 1, 3 rounds × 1 epoch, hidden 64, no length skew, no doc (explicit flags still win)', false)
  .option('--doc <path>', 'results page to update (default docs/examples/protein.md; none with --quick)')
  .option('--no-doc', 'do not write the results page')
  .addOption(new Option('--embedder <name>', 'protein embedding').choices(['composition', 'esm']).default('composition'))
  .option('--esm-dir <dir>', 'local ESM-2 model directory (with --embedder esm)')
  .addOption(
    new Option('--esm-runtime <pkg>', 'inference library for ESM-2')
      .choices(['onnxruntime-node', '@huggingface/transformers'])
      .default('onnxruntime-node'),
  )
  .option('--workspace <dir>', 'keep the simulator workspaces here (default: a temporary directory, removed)')
  .option('--data-dir <dir>', 'DeepLoc FASTA directory (default examples/protein/data/deeploc)')
  .option('--cache-dir <dir>', 'embedding cache directory (default examples/protein/.cache)');

async function main(): Promise<void> {
  program.parse();
  const raw = program.opts();
  const parsed = OptionsSchema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new Error(`option ${i.path.join('.')}: ${i.message}`);
  }
  const o = parsed.data;
  const explicit = (name: string): boolean => program.getOptionValueSource(name) === 'cli';
  if (o.quick) {
    if (!explicit('alpha')) o.alpha = [1];
    if (!explicit('rounds')) o.rounds = 3;
    if (!explicit('localEpochs')) o.localEpochs = 1;
    if (!explicit('hidden')) o.hidden = [64];
    if (!explicit('lengthSkew')) o.lengthSkew = false;
  }
  const docPath =
    o.doc === false
      ? undefined
      : o.doc !== undefined
        ? path.resolve(o.doc)
        : o.quick
          ? undefined
          : path.join(repoRoot, 'docs/examples/protein.md');

  let embedder: Embedder;
  if (o.embedder === 'esm') {
    if (!o.esmDir) throw new Error('--embedder esm needs --esm-dir <local ESM-2 model directory>');
    embedder = await EsmEmbedder.load({ modelDir: o.esmDir, runtime: o.esmRuntime });
  } else embedder = new CompositionFeaturizer();

  const cfg: ExperimentConfig = {
    alphas: o.alpha,
    lengthSkew: o.lengthSkew,
    sites: o.sites,
    rounds: o.rounds,
    localEpochs: o.localEpochs,
    hidden: o.hidden,
    dropout: o.dropout,
    batchSize: o.batchSize,
    lr: o.lr,
    weightDecay: o.weightDecay,
    classWeighted: o.classWeighted,
    proxMu: o.mu,
    seed: o.seed,
    heldOut: o.heldOut,
    embedder,
    ...(o.workspace !== undefined && { workspace: path.resolve(o.workspace) }),
    ...(o.dataDir !== undefined && { dataDir: path.resolve(o.dataDir) }),
    ...(o.cacheDir !== undefined && { cacheDir: path.resolve(o.cacheDir) }),
  };
  const r = await runExperiment(cfg);

  console.log(`\nheld-out test accuracy (majority class ${r.majority.test.toFixed(3)}):`);
  for (const s of r.settings) {
    const get = (k: string): number => s.methods.find((m) => m.kind === k)!.test.accuracy;
    console.log(
      `  ${s.key.padEnd(10)} mean local ${meanLocal(s).toFixed(3)}  centralized ${get('central').toFixed(3)}  FedAvg ${get('fedavg').toFixed(3)}  FedProx ${get('fedprox').toFixed(3)}`,
    );
  }
  console.log(`total ${(r.seconds / 60).toFixed(1)} min`);
  if (docPath) {
    const command =
      `nice node --conditions=flotilla-source --import tsx examples/protein/src/experiment.ts ${process.argv.slice(2).join(' ')}`.trim();
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    await writeReport(r, {
      command,
      docPath,
      assetDir: path.join(path.dirname(docPath), 'protein'),
      machine: `${os.cpus().length} × ${cpu}, Node ${process.version}, tfjs wasm backend`,
    });
    console.log(`wrote ${path.relative(process.cwd(), docPath)}`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
