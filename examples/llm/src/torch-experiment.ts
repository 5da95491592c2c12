/**
 * PyTorch and mixed sites, measured: for PyTorch PEFT (jobs/peft-torch), PyTorch SFT (jobs/sft-torch)
 * and the mixed tfjs + PyTorch PEFT job (jobs/mixed), FedAvg through the simulator against local-only
 * and centralized training (python/train_llm.py --standalone) at the same budget. Reports the validation
 * loss per site (each site's own split) and the bytes per round measured from the server's transfers
 * (the `onTransfer` events its transfer log is written from), not computed from the model size.
 *
 *   node --conditions=flotilla-source --import tsx examples/llm/src/torch-experiment.ts [--rounds 3 ...]
 *
 * FedAvg runs rounds + 1 rounds: in round r each site scores the global model of round r - 1 before
 * training, so round rounds + 1 gives the final model's per-site loss (its training is not counted).
 * Writes docs/examples/llm/torch-results.json and torch-results.md, the section report.ts appends to docs/examples/llm.md.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { simulate } from 'flotilla/simulator';
import { CLIENT_SOURCES } from './instruct.ts';
import { exampleDir, repoRoot } from './paths.ts';
import { type JobSizes, writeShortJob } from './short-job.ts';

const PYTHON = process.env.FLOTILLA_PYTHON || path.join(repoRoot, '.venv/bin/python');
process.env.FLOTILLA_PYTHON = PYTHON;
const int = (v: string) => Number.parseInt(v, 10);
const o = new Command()
  .option('--rounds <n>', 'FedAvg rounds (local-only and centralized train as many rounds)', int, 3)
  .option('--local-steps <n>', 'steps per site per round (centralized: 3x, the sites together)', int, 6)
  .option('--batch <n>', 'examples per step', int, 8)
  .option('--val <n>', 'validation examples per site', int, 24)
  .option('--max-train <n>', 'training examples per site', int, 300)
  .option('--ctx <n>', 'sequence length (toolformer prompts need 192)', int, 192)
  .option('--jobs <list>', 'which jobs', 'peft-torch,sft-torch,mixed')
  .option('--seed <n>', 'seed of every PyTorch site and baseline (data order, LoRA init, dropout)', int, 0)
  .option('--out <file>', 'JSON results', path.join(repoRoot, 'docs/examples/llm/torch-results.json'))
  .parse()
  .opts<{
    rounds: number;
    localSteps: number;
    batch: number;
    val: number;
    maxTrain: number;
    ctx: number;
    jobs: string;
    seed: number;
    out: string;
  }>();

const SITES = 3;
const dataOf = (i: number) => CLIENT_SOURCES[i % CLIENT_SOURCES.length]!.name;
const sizes: Omit<JobSizes, 'rounds'> = {
  localSteps: o.localSteps,
  batch: o.batch,
  valCount: o.val,
  maxTrain: o.maxTrain,
  ctx: o.ctx,
  seed: o.seed,
};
type PerSite = Record<string, number>;
const mean = (p: PerSite) => Object.values(p).reduce((a, b) => a + b, 0) / Object.values(p).length;
const r4 = (x: number) => Number(x.toFixed(4));

async function fedavg(job: string) {
  const scratch = mkdtempSync(path.join(tmpdir(), `llm-torch-${job}-`));
  try {
    const { dir } = writeShortJob(path.join(exampleDir, 'jobs', job), scratch, { rounds: o.rounds + 1, ...sizes });
    let sent = 0;
    let received = 0;
    const perRound: { round: number; toSitesBytes: number; fromSitesBytes: number; transfers: number }[] = [];
    let transfers = 0;
    const t0 = performance.now();
    const r = await simulate({
      jobDir: dir,
      clients: SITES,
      workspace: path.join(scratch, 'ws'),
      onTransfer: (t) => {
        if (!t.done) return;
        transfers++;
        if (t.direction === 'send') sent += t.bytes;
        else received += t.bytes;
      },
      onRound: (s) => {
        perRound.push({ round: s.round + 1, toSitesBytes: sent, fromSitesBytes: received, transfers });
        sent = received = transfers = 0;
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    const curve = r.rounds.map((round) =>
      Object.fromEntries(
        Object.entries(round.siteMetrics).map(([site, m]) => [dataOf(Number(site.replace('site-', '')) - 1), r4(m.val_loss!)]),
      ),
    );
    // the last round only scores the final model; its own training and upload are not part of the budget
    return { curve, final: curve[curve.length - 1]!, bytes: perRound.slice(0, o.rounds), seconds: r4(seconds) };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

function standalone(mode: 'peft' | 'sft', sites: number[], steps: number): { curve: PerSite[]; final: PerSite } {
  const args = [path.join(exampleDir, 'python/train_llm.py'), '--mode', mode, '--site-index', String(sites[0]), '--sites', sites.join(',')];
  args.push('--standalone', String(o.rounds), '--local-steps', String(steps), '--batch', String(o.batch));
  args.push('--val-count', String(o.val), '--max-train', String(o.maxTrain), '--ctx', String(o.ctx), '--seed', String(o.seed));
  const out = execFileSync(PYTHON, args, { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
  const curve = out
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { val_loss: PerSite }).val_loss);
  return { curve, final: curve[curve.length - 1]! };
}

const results: Record<string, unknown> = { settings: { ...o, sites: SITES, python: PYTHON } };
const t0 = performance.now();
const rows: string[] = [];
const names = CLIENT_SOURCES.map((s) => s.name);
const row = (label: string, p: PerSite) => `| ${label} | ${names.map((n) => p[n]!.toFixed(3)).join(' | ')} | ${mean(p).toFixed(3)} |`;
const baselines: Partial<Record<'peft' | 'sft', { local: PerSite; centralized: PerSite; base: PerSite }>> = {};
for (const job of o.jobs.split(',')) {
  const mode = job.startsWith('sft') ? 'sft' : 'peft';
  const t = performance.now();
  const fed = await fedavg(job);
  let b = baselines[mode];
  if (!b) {
    const local: PerSite = {};
    for (let i = 0; i < SITES; i++) Object.assign(local, standalone(mode, [i], o.localSteps).final);
    const centralized = standalone(mode, [0, 1, 2], SITES * o.localSteps).final;
    b = baselines[mode] = { local, centralized, base: fed.curve[0]! };
  }
  const perRound = fed.bytes[0]!;
  results[job] = { fedavg: fed, localOnly: b.local, centralized: b.centralized, seconds: r4((performance.now() - t) / 1000) };
  rows.push(
    `**${job}** (${mode}): bytes per round ${perRound.toSitesBytes} to the sites + ${perRound.fromSitesBytes} back, ${perRound.transfers} transfers`,
  );
  rows.push('', `| ${job} | ${names.join(' | ')} | mean |`, `|---|${names.map(() => '---').join('|')}|---|`);
  rows.push(row('base model', b.base), row('local only', b.local), row('centralized', b.centralized), row('FedAvg', fed.final), '');
  rows.push(`Time: FedAvg ${fed.seconds.toFixed(0)} s, this job with its baselines ${((performance.now() - t) / 1000).toFixed(0)} s.`, '');
  console.error(`${job}: ${((performance.now() - t) / 1000).toFixed(0)} s`);
}
results.totalSeconds = r4((performance.now() - t0) / 1000);
mkdirSync(path.dirname(o.out), { recursive: true });
writeFileSync(o.out, JSON.stringify(results, null, 2) + '\n');
const section = [
  '## PyTorch and mixed sites',
  '',
  `Generated by \`${['node --conditions=flotilla-source --import tsx examples/llm/src/torch-experiment.ts', ...process.argv.slice(2)].join(' ')}\` (${(results.totalSeconds as number).toFixed(0)} s wall on the shared 2-core machine; results: [llm/torch-results.json](llm/torch-results.json)).`,
  '',
  `The same base model as a Hugging Face \`LlamaForCausalLM\` (\`examples/llm/python/hf_llama.py\`, transformers 4.40.2 on Debian's torch 1.13; its logits equal the tfjs model's to max |Δ| 1.1e-5 on 60 positions × 1024 ids, also with LoRA adapters saved by the TypeScript side and loaded by peft 0.10.0: \`test/e2e/examples/llm-hf.test.ts\`), trained by PyTorch sites (\`python/train_llm.py\`). Budget: ${o.rounds} rounds × ${o.localSteps} local steps × batch ${o.batch} per site, 3 sites (alpaca, roleplay, toolformer), ${o.maxTrain} training / ${o.val} validation examples per site, sequences cut to ${o.ctx} tokens; local-only: each site alone for ${o.rounds} × ${o.localSteps} steps; centralized: the pooled data for ${o.rounds} × ${SITES * o.localSteps} steps (the federation's total). PEFT: LoRA rank 4, alpha 8, dropout 0.05 on all 7 projections, lr 0.01; SFT: lr 0.0015; AdamW (0.9, 0.95), gradient norm clipped to 1, as the tfjs sites. The mixed job is jobs/mixed: site-2 (roleplay) runs PyTorch, site-1 and site-3 tfjs, one global LoRA model; its local-only and centralized rows are the PyTorch PEFT ones. Validation loss (nats/token) of the final model on each site's own split; FedAvg's is the global model after ${o.rounds} rounds scored by each site.`,
  '',
  "Bytes per round are measured from the server's transfers (the `onTransfer` events its transfer log is written from: payload bytes of every finished model transfer, both directions), not computed from the model size.",
  '',
  ...rows,
];
const md = o.out.replace(/\.json$/, '') + '.md';
writeFileSync(md, section.join('\n') + '\n');
console.log(section.join('\n'));
