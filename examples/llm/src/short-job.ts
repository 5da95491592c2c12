/**
 * A job folder's config with other sizes (rounds, local steps, batch, data split) in a scratch folder
 * whose model/trainer module re-exports the real one: what the tests and the PyTorch experiment run.
 * Both executor kinds are handled: a tfjs trainer's `args` and a PyTorch script's `--flags`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { type ExecutorSpec, type JobConfig, readJobConfig } from 'flotilla/runtime';

export interface JobSizes {
  rounds: number;
  localSteps: number;
  batch: number;
  valCount: number;
  maxTrain: number;
  ctx: number;
  /** a PyTorch script's `--seed` (the tfjs trainers keep their own) */
  seed?: number;
}

const FLAGS: Record<keyof Omit<JobSizes, 'rounds' | 'seed'>, string> = {
  localSteps: '--local-steps',
  batch: '--batch',
  valCount: '--val-count',
  maxTrain: '--max-train',
  ctx: '--ctx',
};

function resize(e: ExecutorSpec, s: JobSizes): ExecutorSpec {
  const { rounds: _, seed, ...sizes } = s;
  if ('script' in e) {
    const args = [...e.script.args];
    if (seed !== undefined) {
      const i = args.indexOf('--seed');
      if (i >= 0) args[i + 1] = String(seed);
      else args.push('--seed', String(seed));
    }
    for (const [key, flag] of Object.entries(FLAGS)) {
      const v = String(sizes[key as keyof typeof FLAGS]);
      const i = args.indexOf(flag);
      if (i >= 0) args[i + 1] = v;
      else args.push(flag, v);
    }
    return { ...e, script: { ...e.script, args } };
  }
  if (!('factory' in e.trainer)) throw new Error('executor.trainer: a factory trainer is needed to change its sizes');
  return { ...e, trainer: { ...e.trainer, args: { ...e.trainer.args, ...sizes } } };
}

/** Writes `<scratch>/<job name>/job.json` and the re-exporting module; returns the folder and its config. */
export function writeShortJob(jobDir: string, scratch: string, sizes: JobSizes): { dir: string; config: JobConfig } {
  const { config } = readJobConfig(jobDir);
  if (!('module' in config.model)) throw new Error(`${jobDir}: model.module expected`);
  const short: JobConfig = {
    ...config,
    workflows: config.workflows.map((w) => ({ ...w, rounds: sizes.rounds })),
    executor: resize(config.executor, sizes),
    sites: Object.fromEntries(Object.entries(config.sites).map(([site, v]) => [site, { executor: resize(v.executor, sizes) }])),
  };
  const dir = path.join(scratch, path.basename(jobDir));
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'job.json'), JSON.stringify(short, null, 2));
  writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n');
  const module = config.model.module;
  writeFileSync(path.join(dir, module), `export * from ${JSON.stringify(pathToFileURL(path.join(jobDir, module)).href)};\n`);
  return { dir, config: readJobConfig(dir).config };
}
