/**
 * The PyTorch PEFT job over several seeds: reads torch-experiment.ts's results for seed 0
 * (docs/examples/llm/torch-results.json) and for other seeds (torch-results-peft-seed<k>.json, from
 * `torch-experiment.ts --jobs peft-torch --seed k --out ...`) and writes the mean ± sample standard
 * deviation (and the range) of each row's mean validation loss: docs/examples/llm/torch-seeds.md,
 * the section report.ts keeps after "PyTorch and mixed sites".
 *
 *   node --conditions=flotilla-source --import tsx examples/llm/src/torch-seeds.ts
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { repoRoot } from './paths.ts';

const dir = path.join(repoRoot, 'docs/examples/llm');
const PerSite = z.record(z.string(), z.number());
const Job = z.object({ fedavg: z.object({ final: PerSite, curve: z.array(PerSite) }), localOnly: PerSite, centralized: PerSite });
const Results = z.object({ settings: z.object({ seed: z.number().optional() }).passthrough(), 'peft-torch': Job });

const runs: { seed: number; job: z.infer<typeof Job> }[] = [];
const files = [
  'torch-results.json',
  ...readdirSync(dir)
    .filter((f) => /^torch-results-peft-seed\d+\.json$/.test(f))
    .sort(),
];
for (const f of files) {
  const p = path.join(dir, f);
  if (!existsSync(p)) continue;
  const r = Results.parse(JSON.parse(readFileSync(p, 'utf8')));
  runs.push({ seed: r.settings.seed ?? 0, job: r['peft-torch'] });
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs: number[]) => Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / Math.max(1, xs.length - 1));
const siteMean = (p: Record<string, number>) => mean(Object.values(p));
const rows: [string, (j: z.infer<typeof Job>) => Record<string, number>][] = [
  ['base model', (j) => j.fedavg.curve[0]!],
  ['local only', (j) => j.localOnly],
  ['centralized', (j) => j.centralized],
  ['FedAvg', (j) => j.fedavg.final],
];
const fmt = (xs: number[]) =>
  `${mean(xs).toFixed(3)} ± ${sd(xs).toFixed(3)} | ${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)} | ${xs.map((x) => x.toFixed(3)).join(', ')}`;
const gap = runs.map((r) => siteMean(r.job.fedavg.final) - siteMean(r.job.centralized));
const out = [
  '### PyTorch PEFT over seeds',
  '',
  `jobs/peft-torch with its baselines, the budget above, seeds ${runs.map((r) => r.seed).join(', ')} (\`torch-experiment.ts --rounds 3 --local-steps 6 --jobs peft-torch --seed k --out docs/examples/llm/torch-results-peft-seed<k>.json\`; seed 0 is the run above; summarized by \`examples/llm/src/torch-seeds.ts\`). The seed draws each site's training/validation split (hence the base model's loss differs) and sets the PyTorch sites' data order and dropout (train_llm.py: \`seed + site index\`); the initial LoRA adapters are the same in every run. Mean validation loss over the 3 sites' own splits: mean ± sample standard deviation over the seeds, range, and each seed's value.`,
  '',
  '| peft-torch | mean ± sd | range | per seed |',
  '|---|---|---|---|',
  ...rows.map(([label, pick]) => `| ${label} | ${fmt(runs.map((r) => siteMean(pick(r.job))))} |`),
  `| FedAvg − centralized | ${fmt(gap)} |`,
  '',
];
writeFileSync(path.join(dir, 'torch-seeds.md'), out.join('\n'));
console.log(out.join('\n'));
