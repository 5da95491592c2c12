/**
 * Records a timed `flotilla simulate` run of a job folder as
 * docs/examples/llm/simulate-peft.json (read by the report): wall and CPU time
 * and peak RSS from `/usr/bin/time -v`, the loss per round from the run's
 * workspace (server/summary.json), and the job's settings.
 *
 *   /usr/bin/time -v node bin/flotilla.js simulate examples/llm/jobs/peft --clients 3 --workspace /tmp/llm-peft 2> /tmp/sim.time
 *   node --conditions=flotilla-source --import tsx examples/llm/src/record-simulate.ts --time /tmp/sim.time --workspace /tmp/llm-peft --note "..."
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { readJobConfig } from 'flotilla/runtime';
import type { RoundSummary } from 'flotilla/workflows';
import { repoRoot } from './paths.ts';

const o = new Command()
  .requiredOption('--time <file>', 'stderr of /usr/bin/time -v')
  .requiredOption('--workspace <dir>', 'the simulation workspace')
  .option('--job <dir>', 'job folder', 'examples/llm/jobs/peft')
  .option('--note <text>', 'conditions of the measurement')
  .option('--out <file>', 'where to write', path.join(repoRoot, 'docs/examples/llm/simulate-peft.json'))
  .parse()
  .opts<{ time: string; workspace: string; job: string; note?: string; out: string }>();

const text = readFileSync(o.time, 'utf8');
function field(label: string): string {
  const line = text.split('\n').find((l) => l.trim().startsWith(label));
  if (!line) throw new Error(`${o.time}: no "${label}" line (is it /usr/bin/time -v output?)`);
  return line.slice(line.indexOf(label) + label.length).trim();
}
const cmdMatch = /^"(.*)"$/.exec(field('Command being timed:'));
const wall = field('Elapsed (wall clock) time (h:mm:ss or m:ss):').split(':').map(Number).reverse();
const wallSeconds = wall.reduce((a, x, i) => a + x * 60 ** i, 0);
const user = Number(field('User time (seconds):'));
const sys = Number(field('System time (seconds):'));
const exit = Number(field('Exit status:'));
if (exit !== 0) throw new Error(`the timed run exited with status ${exit}`);

const summary = JSON.parse(readFileSync(path.join(o.workspace, 'server', 'summary.json'), 'utf8')) as { rounds: RoundSummary[] };
const { config } = readJobConfig(path.resolve(repoRoot, o.job));
const args = 'trainer' in config.executor && 'args' in config.executor.trainer ? config.executor.trainer.args : {};

// Each site scores the global model it receives before training, so round r's validation loss is the model after r − 1 rounds.
const perRound = summary.rounds.map((r) => {
  const ms = Object.values(r.siteMetrics);
  const tok = (k: string) => ms.reduce((a, m) => a + (m[k] ?? 0), 0);
  const weighted = (k: string, w: string) => ms.reduce((a, m) => a + (m[k] ?? 0) * (m[w] ?? 0), 0) / tok(w);
  return {
    round: r.round + 1,
    trainLoss: Number(weighted('train_loss', 'train_tokens').toFixed(4)),
    valLossOfGlobalBefore: Number(weighted('val_loss', 'val_tokens').toFixed(4)),
    seconds: r.seconds,
  };
});

const record = {
  command: cmdMatch ? cmdMatch[1]! : field('Command being timed:'),
  rounds: summary.rounds.length,
  wallSeconds: Number(wallSeconds.toFixed(1)),
  cpuSeconds: Number((user + sys).toFixed(1)),
  userSeconds: user,
  systemSeconds: sys,
  peakRssMB: Math.round(Number(field('Maximum resident set size (kbytes):')) / 1024),
  jobSettings: args,
  perRound,
  ...(o.note && { note: o.note }),
};
writeFileSync(o.out, JSON.stringify(record, null, 2) + '\n');
console.log(JSON.stringify(record, null, 2));
