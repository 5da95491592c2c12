/**
 * The LLM job folders (jobs/peft, jobs/sft) run by `flotilla simulate` with each site's upload (its
 * result) quantized: float32 (no filter), float16, blockwise 8-bit and NF4, same seeds, same sitting.
 * For each run: the pooled validation loss of every round's global model (as the sites score it before
 * training) and the bytes one upload takes on the wire (the final global model streamed through the
 * same quantizer). Writes --out (one JSON object, also printed); `--report` writes the section
 * docs/examples/llm/quant-upload.md from every docs/examples/llm/quant-upload*.json (report.ts keeps it in
 * docs/examples/llm.md).
 *
 *   nice -n 10 node --conditions=flotilla-source --import tsx examples/llm/src/quant-upload.ts --modes peft --out docs/examples/llm/quant-upload-peft.json
 *   node --conditions=flotilla-source --import tsx examples/llm/src/quant-upload.ts --report
 */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { encodedBytes, encodeStream, dictToStream, readSafetensors, type TensorStream } from 'flotilla/core';
import { QuantizeSpecSchema, quantFormat, quantizeStream } from 'flotilla/filters';
import { readJobConfig } from 'flotilla/runtime';
import { RoundSummarySchema } from 'flotilla/workflows';
import { z } from 'zod';
import { repoRoot } from './paths.ts';

const FORMATS = {
  float32: null,
  float16: { type: 'quantize', bits: 16, direction: 'result' },
  int8: { type: 'quantize', bits: 8, direction: 'result' },
  nf4: { type: 'quantize', bits: 4, format: 'nf4', direction: 'result' },
} as const;
type Format = keyof typeof FORMATS;

const o = new Command()
  .option('--modes <list>', 'job folders under examples/llm/jobs', 'peft,sft')
  .option('--formats <list>', `upload formats (${Object.keys(FORMATS).join(', ')})`, Object.keys(FORMATS).join(','))
  .option('--rounds <n>', 'FedAvg rounds (the last round scores the global model of the round before)', '5')
  .option('--out <file>', 'results', path.join(repoRoot, 'docs/examples/llm/quant-upload.json'))
  .option('--report', 'no runs: write docs/examples/llm/quant-upload.md from the saved results')
  .parse()
  .opts<{ modes: string; formats: string; rounds: string; out: string; report?: boolean }>();

const modes = o.modes.split(',').filter(Boolean);
const formats = o.formats.split(',').filter(Boolean);
for (const f of formats) if (!(f in FORMATS)) throw new Error(`--formats: unknown format "${f}" (use ${Object.keys(FORMATS).join(', ')})`);
const rounds = Number(o.rounds);
if (!Number.isInteger(rounds) || rounds < 2) throw new Error(`--rounds must be an integer >= 2, got "${o.rounds}"`);

const Summary = z.object({ rounds: z.array(RoundSummarySchema) });
const Run = z.object({
  mode: z.string(),
  format: z.enum(['float32', 'float16', 'int8', 'nf4']),
  valLossPerRound: z.array(z.number()),
  finalValLoss: z.number(),
  uploadBytes: z.number(),
  float32Bytes: z.number(),
  uploadFraction: z.number(),
  wallSeconds: z.number(),
});
const Record_ = z.object({ command: z.string(), rounds: z.number(), results: z.array(Run) });

function runCli(args: string[]): Promise<{ code: number; out: string; seconds: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn(
      process.execPath,
      ['--conditions=flotilla-source', '--import', 'tsx', path.join(repoRoot, 'src/cli/main.ts'), ...args],
      {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (out += b.toString()));
    p.on('close', (code) => resolve({ code: code ?? 1, out, seconds: (Date.now() - t0) / 1000 }));
  });
}

async function wireBytes(stream: TensorStream): Promise<number> {
  let n = 0;
  for await (const b of encodeStream(stream)) n += b.byteLength;
  return n;
}

/** The newest global model a run wrote (server/round-<r>/global_model.safetensors, or the run's final one). */
function finalModel(ws: string): string {
  const server = path.join(ws, 'server');
  const roundsDone = readdirSync(server)
    .map((d) => /^round-(\d+)$/.exec(d))
    .filter((m): m is RegExpExecArray => m !== null && existsSync(path.join(server, m[0], 'global_model.safetensors')))
    .sort((a, b) => Number(b[1]) - Number(a[1]));
  if (!roundsDone.length) throw new Error(`${server}: no round-<r>/global_model.safetensors`);
  return path.join(server, roundsDone[0]![0], 'global_model.safetensors');
}

async function run(mode: string, format: Format) {
  const src = path.join(repoRoot, 'examples/llm/jobs', mode);
  // beside the original, so that the job's relative imports (../../src/...) resolve as they do there
  const job = path.join(repoRoot, 'examples/llm/jobs', `.quant-${mode}-${format}`);
  const ws = mkdtempSync(path.join(tmpdir(), `flotilla-quant-${mode}-${format}-`));
  try {
    cpSync(src, job, { recursive: true });
    // the job's own config, parsed and validated, with the rounds and the upload filter of this run (job.json wins no
    // precedence contest: job.yaml is removed)
    const { config } = readJobConfig(src);
    const filter = FORMATS[format];
    const changed = {
      ...config,
      name: `${config.name}-${format}`,
      workflows: config.workflows.map((w) => ({ ...w, rounds })),
      filters: filter ? [filter] : [],
    };
    rmSync(path.join(job, 'job.yaml'));
    writeFileSync(path.join(job, 'job.json'), JSON.stringify(changed, null, 2));
    process.stderr.write(`${mode} ${format}: simulating ${rounds} rounds with 3 sites ...\n`);
    const r = await runCli(['simulate', job, '-n', '3', '-w', ws]);
    if (r.code !== 0) throw new Error(`${mode} ${format}: simulate exited with ${r.code}:\n${r.out.slice(-3000)}`);
    const summary = Summary.parse(JSON.parse(readFileSync(path.join(ws, 'server', 'summary.json'), 'utf8')));
    const pooled = (rs: (typeof summary.rounds)[number], key: string, weight: string) => {
      const ms = Object.values(rs.siteMetrics);
      const w = ms.reduce((a, m) => a + (m[weight] ?? 0), 0);
      return Number((ms.reduce((a, m) => a + (m[key] ?? 0) * (m[weight] ?? 0), 0) / w).toFixed(4));
    };
    const valLoss = summary.rounds.map((rs) => pooled(rs, 'val_loss', 'val_tokens'));
    const { tensors, metadata } = await readSafetensors(finalModel(ws));
    const float32Bytes = encodedBytes(dictToStream(tensors, { metadata }).header);
    const uploadBytes = filter
      ? await wireBytes(
          // the format and block size the job's filter resolves to
          quantizeStream(dictToStream(tensors, { metadata }), quantFormat(QuantizeSpecSchema.parse(filter))),
        )
      : float32Bytes;
    const out = {
      mode,
      format,
      valLossPerRound: valLoss,
      finalValLoss: valLoss.at(-1)!,
      trainLossLastRound: pooled(summary.rounds.at(-1)!, 'train_loss', 'train_tokens'),
      uploadBytes,
      float32Bytes,
      uploadFraction: Number((uploadBytes / float32Bytes).toFixed(4)),
      wallSeconds: r.seconds,
    };
    process.stderr.write(`${mode} ${format}: ${JSON.stringify(out)}\n`);
    return out;
  } finally {
    rmSync(job, { recursive: true, force: true });
    rmSync(ws, { recursive: true, force: true });
  }
}

const LABEL: Record<Format, string> = {
  float32: 'float32 (no filter)',
  float16: 'float16',
  int8: 'blockwise 8-bit (block 256)',
  nf4: 'NF4 (block 64)',
};

/** The section of docs/examples/llm.md: one table per job, each format against float32 of the same sitting. */
function report(): void {
  const dir = path.join(repoRoot, 'docs/examples/llm');
  const files = readdirSync(dir)
    .filter((f) => /^quant-upload.*\.json$/.test(f))
    .sort();
  const recs = files.map((f) => ({ file: f, rec: Record_.parse(JSON.parse(readFileSync(path.join(dir, f), 'utf8'))) }));
  const lines = [
    '## Quantized uploads: float16, 8-bit and NF4 against float32',
    '',
    `Each job folder run by \`flotilla simulate\` with 3 sites, ${recs[0]?.rec.rounds ?? '?'} FedAvg rounds, and a \`quantize\` filter on the`,
    "sites' results (`direction: result`; tasks travel in float32), the job's own seeds. The loss is the pooled",
    'validation loss the sites measure on the global model they receive in the last round (the model after',
    "all rounds but the last, each aggregated from quantized uploads). Upload: the bytes of one site's result",
    'on the wire (safetensors stream with scales and metadata).',
    '',
    '```sh',
    ...[...new Set(recs.map((r) => r.rec.command))].map((c) => `nice -n 10 ${c}`),
    '```',
    '',
  ];
  for (const mode of [...new Set(recs.flatMap((r) => r.rec.results.map((x) => x.mode)))]) {
    const runs = recs.flatMap((r) => r.rec.results.filter((x) => x.mode === mode));
    const base = runs.find((x) => x.format === 'float32');
    lines.push(
      `**${mode.toUpperCase()}** (jobs/${mode})`,
      '',
      '| upload | bytes | vs float32 | final val loss | Δ loss vs float32 | loss per round |',
      '| --- | ---: | ---: | ---: | ---: | --- |',
    );
    for (const f of Object.keys(FORMATS) as Format[]) {
      const x = runs.find((r) => r.format === f);
      if (!x) continue;
      const rel = base ? ((x.finalValLoss - base.finalValLoss) / base.finalValLoss) * 100 : NaN;
      const delta = base ? `${Math.abs(rel) < 0.005 ? '0.00' : (rel > 0 ? '+' : '') + rel.toFixed(2)} %` : '–';
      lines.push(
        `| ${LABEL[f]} | ${x.uploadBytes.toLocaleString('en-US')} | ${(x.uploadFraction * 100).toFixed(1)} % | ${x.finalValLoss.toFixed(4)} | ${f === 'float32' ? '–' : delta} | ${x.valLossPerRound.map((v) => v.toFixed(4)).join(', ')} |`,
      );
    }
    lines.push('');
  }
  lines.push(
    "**What this shows.** float16 and blockwise 8-bit uploads leave the loss where float32 puts it (the issue's target:",
    '8-bit within 1 % of float32); for the adapters the 8-bit upload is a third of float32, not a quarter, because',
    "LoRA's small tensors carry a scale per block and their names in the header. NF4 (4-bit with a per-block scale) is",
    'close for the adapters and costs the full fine-tuning loss a few percent: the large weights of SFT lose more',
    'to 16 levels per block than the low-rank adapters, whose updates are small. The machine was shared (load',
    'average 7–17), which changes the wall time, not the losses: the runs are deterministic given the seeds.',
    '',
  );
  lines.push(`Raw results: ${files.map((f) => `docs/examples/llm/${f}`).join(', ')}.`, '');
  writeFileSync(path.join(dir, 'quant-upload.md'), lines.join('\n'));
  console.log(lines.join('\n'));
}

if (o.report) {
  report();
  process.exit(0);
}

const results: z.infer<typeof Run>[] = [];
const record = {
  command: `node --conditions=flotilla-source --import tsx examples/llm/src/quant-upload.ts ${process.argv.slice(2).join(' ')}`.trim(),
  rounds,
  sites: 3,
  note: 'valLossPerRound[r]: the pooled validation loss the sites measure on the global model they receive in round r + 1 (after r rounds); the last entry is the global model after rounds - 1 quantized rounds',
  results,
};
// written after every run, so that a failed run keeps the ones before it
for (const mode of modes)
  for (const f of formats) {
    results.push(await run(mode, f as Format));
    writeFileSync(o.out, JSON.stringify(record, null, 2) + '\n');
  }
console.log(JSON.stringify(record));
