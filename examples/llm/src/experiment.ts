/**
 * The federated instruction-tuning experiment (the paper's Figure 3 setting):
 * for PEFT (LoRA) and for SFT (all weights), train
 *   - each client alone (local-only),
 *   - all clients' data pooled (centralized, same total steps as FedAvg),
 *   - FedAvg over the three clients (the platform's simulator and workflow),
 * and record per-dataset validation losses per round, bytes per round and a
 * few generations. `--mode all` runs PEFT and SFT in two child processes
 * (one core each) and then writes docs/examples/llm.md (report.ts).
 *
 * usage: nice -n 19 node --conditions=flotilla-source --import tsx examples/llm/src/experiment.ts --mode all
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { z } from 'zod';
import { dictBytes } from 'flotilla/core';
import { simulateInProcess } from 'flotilla/simulator';
import type { RoundSummary } from 'flotilla/workflows';
import { FedAvg } from 'flotilla/workflows';
import { initBackend } from './backend.ts';
import { BpeTokenizer, EOT } from './bpe.ts';
import { Finetuner, evaluate } from './finetune.ts';
import { BatchSampler, type ClientData, type Example, loadClients } from './instruct.ts';
import type { LlamaModel } from './model.ts';
import { baseDir, repoRoot } from './paths.ts';
import { hasNumpy, referenceMaxDiff } from './reference.ts';
import { type Eval, type ModeResult, type ReportExtras, type RunResult, type SimulateTiming, writeReport } from './report.ts';
import { Rng } from './rng.ts';
import { DEFAULT_LORA, type TuneMode, incoming, initialGlobalModel, llmTrainer, prepareModel } from './trainers.ts';

const o = new Command()
  .option('--mode <m>', 'peft, sft or all', 'all')
  .option('--rounds <n>', 'FedAvg rounds', '4')
  .option('--local-steps <n>', 'steps per client per round', '8')
  .option('--batch <n>', 'examples per step', '8')
  .option('--lr-peft <x>', 'LoRA learning rate', '1e-2')
  .option('--lr-sft <x>', 'full fine-tuning learning rate', '1.5e-3')
  .option('--val <n>', 'validation examples per client', '32')
  .option('--max-train <n>', 'training examples per client', '900')
  .option('--seed <n>', 'seed', '42')
  .option('--base <dir>', 'base model folder (config.json, model.safetensors, tokenizer.json)', baseDir)
  .option('--out <dir>', 'results and plots', path.join(repoRoot, 'docs/examples/llm'))
  .option('--doc <file>', 'report', path.join(repoRoot, 'docs/examples/llm.md'))
  .option('--also <dirs>', 'report: comma-separated folders with results of other runs, summarised at the end', '')
  .parse()
  .opts<Record<string, string>>();

/** How this run was started (for the report): the options as given, and `nice` when the process runs niced. */
function commandLine(): string {
  const inherited = process.env.LLM_EXPERIMENT_COMMAND;
  if (inherited) return inherited;
  const nice = os.getPriority();
  const args = process.argv.slice(2).filter((_, i, a) => !(a[i] === '--mode' || a[i - 1] === '--mode'));
  return `${nice ? `nice -n ${nice} ` : ''}node --conditions=flotilla-source --import tsx examples/llm/src/experiment.ts --mode ${o.mode === 'peft' || o.mode === 'sft' ? o.mode : 'all'}${args.length ? ' ' + args.join(' ') : ''}`;
}

const n = (k: string): number => {
  const v = Number(o[k]);
  if (!Number.isFinite(v) || v <= 0)
    throw new Error(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}: expected a positive number, got ${o[k]}`);
  return v;
};

function evalAll(model: LlamaModel, clients: readonly ClientData[]): Eval {
  const perDataset: Record<string, number> = {};
  let sum = 0;
  let tokens = 0;
  for (const c of clients) {
    const e = evaluate(model, c.val);
    perDataset[c.name] = e.loss;
    sum += e.loss * e.tokens;
    tokens += e.tokens;
  }
  return { perDataset, pooled: sum / tokens };
}

/** Trains on `train` for rounds × stepsPerRound steps, evaluating after each round. */
async function trainAlone(
  mode: TuneMode,
  train: readonly Example[],
  clients: readonly ClientData[],
  rounds: number,
  stepsPerRound: number,
  lr: number,
  seed: number,
  start: number,
): Promise<RunResult> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const model = await prepareModel(mode, String(o.base), DEFAULT_LORA, seed);
  const ft = new Finetuner(model, { lr });
  const sampler = new BatchSampler(train, n('batch'), new Rng(seed + 17));
  const curve: [number, number][] = [[0, start]];
  let final: Eval | undefined;
  for (let r = 1; r <= rounds; r++) {
    for (let s = 0; s < stepsPerRound; s++) ft.step(sampler.next());
    final = evalAll(model, clients);
    curve.push([r, final.pooled]);
    console.log(`  round ${r}: pooled ${final.pooled.toFixed(4)}`);
  }
  ft.dispose();
  model.dispose();
  return { curve, final: final!, seconds: (performance.now() - t0) / 1000, cpuSeconds: cpuSince(c0) };
}

/** User + system CPU seconds of this process since `c0`. */
function cpuSince(c0: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(c0);
  return (d.user + d.system) / 1e6;
}

function promptOf(tok: BpeTokenizer, e: Example): string {
  return tok.decode([...e.ids.slice(0, e.promptLen)]);
}

function generate(model: LlamaModel, tok: BpeTokenizer, prompt: string): string {
  return tok
    .decode(model.generate(tok.encode(prompt), 48, { temperature: 0, stopId: tok.specialId(EOT) }))
    .replace(EOT, '')
    .trim();
}

async function runMode(mode: TuneMode): Promise<ModeResult> {
  const wall0 = performance.now();
  const cpu0 = process.cpuUsage();
  await initBackend();
  const seed = n('seed');
  const rounds = n('rounds');
  const steps = n('localSteps');
  const lr = mode === 'peft' ? n('lrPeft') : n('lrSft');
  const base = String(o.base);
  const tok = BpeTokenizer.load(path.join(base, 'tokenizer.json'));
  const probe = await prepareModel(mode, base, DEFAULT_LORA, seed);
  const clients = loadClients(tok, { ctx: probe.config.maxSeqLen, seed, valCount: n('val'), maxTrain: n('maxTrain') });
  const log = (s: string) => console.log(`[${mode}] ${s}`);

  const start = evalAll(probe, clients);
  log(`base: ${JSON.stringify(start)}`);
  const prompts = clients.map((c) => promptOf(tok, c.val[0]!));
  const baseGen = prompts.map((p) => generate(probe, tok, p));

  const local: Record<string, RunResult> = {};
  for (const [i, c] of clients.entries()) {
    log(`local-only ${c.name}`);
    local[c.name] = await trainAlone(mode, c.train, clients, rounds, steps, lr, seed + i, start.pooled);
  }
  log('centralized');
  const centralized = await trainAlone(
    mode,
    clients.flatMap((c) => c.train),
    clients,
    rounds,
    steps * clients.length,
    lr,
    seed + 100,
    start.pooled,
  );

  log('fedavg');
  const initialModel = await initialGlobalModel(mode, base, DEFAULT_LORA, seed);
  const workspace = mkdtempSync(path.join(tmpdir(), `llm-${mode}-`));
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const summaries: RoundSummary[] = [];
  let result;
  try {
    result = await simulateInProcess({
      workflow: new FedAvg({ rounds, minClients: clients.length, initialModel }),
      sites: clients.map((c, i) => ({
        name: c.name,
        trainer: llmTrainer({ mode, baseDir: base, data: c, localSteps: steps, batch: n('batch'), lr, seed: seed + i, lora: DEFAULT_LORA }),
      })),
      workspace,
      onRound: (r) => {
        summaries.push(r);
        log(`  round ${r.round}: ${JSON.stringify(r.metrics)} (${r.seconds.toFixed(0)} s)`);
      },
    });
  } finally {
    rmSync(workspace, { recursive: true, force: true });
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = cpuSince(c0);
  // Sites score the global model they receive before training, so round r's metrics describe the model after r rounds.
  const curve: [number, number][] = summaries.map((s) => {
    const ms = Object.values(s.siteMetrics);
    const tokens = ms.reduce((a, m) => a + (m.val_tokens ?? 0), 0);
    return [s.round, ms.reduce((a, m) => a + (m.val_loss ?? 0) * (m.val_tokens ?? 0), 0) / tokens];
  });
  incoming(probe, mode, result.model);
  const final = evalAll(probe, clients);
  curve.push([rounds, final.pooled]);
  const fedGen = prompts.map((p) => generate(probe, tok, p));
  const perDir = dictBytes(initialModel);
  const fullModelBytes = dictBytes(probe.toTensorDict());
  probe.dispose();
  return {
    mode,
    settings: {
      rounds,
      localSteps: steps,
      batch: n('batch'),
      lr,
      seed,
      valPerClient: n('val'),
      maxTrainPerClient: n('maxTrain'),
      ctx: probe.config.maxSeqLen,
      ...(mode === 'peft' && {
        loraRank: DEFAULT_LORA.rank,
        loraAlpha: DEFAULT_LORA.alpha,
        loraDropout: DEFAULT_LORA.dropout,
        loraTargets: DEFAULT_LORA.targets.join(','),
      }),
    },
    clients: clients.map((c) => ({ name: c.name, train: c.train.length, val: c.val.length, dropped: c.dropped })),
    base: start,
    local,
    centralized,
    fedavg: {
      curve,
      final,
      seconds,
      cpuSeconds,
      bytesPerClientPerDirection: perDir,
      bytesPerRound: 2 * clients.length * perDir,
      fullModelBytes,
      rounds: summaries,
    },
    generations: prompts.map((prompt, i) => ({ prompt, base: baseGen[i]!, fedavg: fedGen[i]! })),
    total: { seconds: (performance.now() - wall0) / 1000, cpuSeconds: cpuSince(cpu0), niceness: os.getPriority() },
    command: commandLine(),
  };
}

const SimulateTimingSchema = z
  .object({
    command: z.string(),
    rounds: z.number().int().positive(),
    wallSeconds: z.number().positive(),
    cpuSeconds: z.number().positive(),
    userSeconds: z.number().nonnegative().optional(),
    systemSeconds: z.number().nonnegative().optional(),
    peakRssMB: z.number().positive().optional(),
    jobSettings: z.record(z.string(), z.unknown()).optional(),
    perRound: z
      .array(
        z
          .object({ round: z.number().int().positive(), trainLoss: z.number(), valLossOfGlobalBefore: z.number(), seconds: z.number() })
          .strict(),
      )
      .optional(),
    note: z.string().optional(),
  })
  .strict();

/** The separately timed `flotilla simulate examples/llm/jobs/peft` run, if recorded. */
function simulateTiming(): SimulateTiming | undefined {
  const f = path.join(String(o.out), 'simulate-peft.json');
  if (!existsSync(f)) return undefined;
  const p = SimulateTimingSchema.safeParse(JSON.parse(readFileSync(f, 'utf8')));
  if (!p.success) throw new Error(`${f}: field "${p.error.issues[0]?.path.join('.')}": ${p.error.issues[0]?.message}`);
  return p.data;
}

async function extras(): Promise<ReportExtras> {
  const simulate = simulateTiming();
  const otherRuns = String(o.also)
    .split(',')
    .filter((d) => d.trim())
    .map((d) => path.resolve(d.trim()));
  const notesFile = path.join(String(o.out), 'notes.md');
  const notes = existsSync(notesFile) ? readFileSync(notesFile, 'utf8') : undefined;
  const common: ReportExtras = { ...(simulate && { simulate }), ...(otherRuns.length && { otherRuns }), ...(notes && { notes }) };
  if (!hasNumpy()) return common;
  const ids = [1, 403, 261, 378, 7, 511, 0, 42, 42, 300, 299, 298, 13, 65, 66, 67, 1, 2, 3, 500];
  return { reference: { maxDiff: await referenceMaxDiff(ids), positions: ids.length }, ...common };
}

function runChild(mode: TuneMode): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const args = [
    '--import',
    'tsx',
    self,
    '--mode',
    mode,
    ...Object.entries(o)
      .filter(([k]) => k !== 'mode')
      .flatMap(([k, v]) => [`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`, String(v)]),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, LLM_EXPERIMENT_COMMAND: commandLine() },
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${mode} run exited with code ${code}`))));
  });
}

const outDir = String(o.out);
mkdirSync(outDir, { recursive: true });
if (o.mode === 'all') {
  const t0 = performance.now();
  await Promise.all([runChild('peft'), runChild('sft')]);
  writeReport(outDir, String(o.doc), await extras());
  console.log(`done in ${((performance.now() - t0) / 60000).toFixed(1)} min; wrote ${o.doc}`);
} else if (o.mode === 'peft' || o.mode === 'sft') {
  const r = await runMode(o.mode);
  writeFileSync(path.join(outDir, `results-${o.mode}.json`), JSON.stringify(r, null, 2) + '\n');
} else if (o.mode === 'report') {
  writeReport(outDir, String(o.doc), await extras());
} else {
  throw new Error(`--mode must be peft, sft, all or report, got ${o.mode}`);
}
