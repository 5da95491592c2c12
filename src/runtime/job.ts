/**
 * Turns a validated job folder into running parts: the initial model and each
 * site's trainer host (the chain of server workflows is src/workflows/run-job.ts). Shared by the
 * simulator and the real deployment so a job runs unchanged in both.
 */
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ModelRef } from '../core/model-ref.ts';
import type { TensorDict } from '../core/tensor.ts';
import type { Trainer, TrainerHost } from '../client/api.ts';
import type { TrainerDefinition, TrainerFactory } from '../client/trainer-definition.ts';
import type { InitialModelDefinition } from '../core/model-definition.ts';
import { isDefinition, parseDeclaredArgs } from '../util/declared-args.ts';
import type { Logger } from '../util/log.ts';
import { type ExecutorSpec, type JobConfig, JobConfigError, readJobConfig } from './job-config.ts';
import { commonJsProblem, registerJobImports } from './job-imports.ts';

/** The installed Flotilla (repo root): `{flotillaRoot}` in script args/env, e.g. for PYTHONPATH={flotillaRoot}/python. */
export const FLOTILLA_ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

export type { TrainerFactory, TrainerFactoryContext } from '../client/trainer-definition.ts';

export interface Job {
  dir: string;
  file: string;
  config: JobConfig;
}

export function loadJob(jobDir: string): Job {
  const { config, file } = readJobConfig(jobDir);
  return { dir: resolve(jobDir), file, config };
}

/** An export of a job module (its `flotilla/...` imports resolved to this installation); errors name the job file and `what`. */
export async function importFrom(job: Job, module: string, exportName: string, what: string): Promise<unknown> {
  const path = join(job.dir, module);
  let mod: Record<string, unknown>;
  const cjs = commonJsProblem(path);
  if (cjs) throw new JobConfigError(`${job.file}: ${what}: ${cjs}`);
  registerJobImports(); // the job's `flotilla/...` imports resolve to this installation
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (e) {
    throw new JobConfigError(`${job.file}: ${what}: cannot load ${path}: ${(e as Error).message}`);
  }
  if (!(exportName in mod))
    throw new JobConfigError(
      `${job.file}: ${what}: ${module} has no export "${exportName}" (it exports ${Object.keys(mod).join(', ') || 'nothing'})`,
    );
  return mod[exportName];
}

/**
 * The initial global model as a ModelRef: tensors in memory, or a safetensors file that is read
 * only by the workflows that need it in memory (offloaded FedAvg streams it from disk).
 * `model: {path}` gives the file; a model module's export may return tensors or a path
 * (absolute, or relative to the job folder), e.g. of a model too large for the job bundle.
 */
export async function loadInitialModel(job: Job): Promise<ModelRef> {
  const spec = job.config.model;
  if ('path' in spec) return ModelRef.file(join(job.dir, spec.path)); // a bad file fails the job now, not in round 1
  const fn = await importFrom(job, spec.module, spec.export, 'model');
  let model: unknown;
  if (isDefinition(fn)) {
    const args = parseDeclaredArgs(fn.schema, spec.args, 'model.args');
    if (!args.ok) throw new JobConfigError(`${job.file}: ${args.reason} (the schema ${spec.module} declares)`);
    model = await (fn as InitialModelDefinition).create(args.value);
  } else if (typeof fn !== 'function')
    throw new JobConfigError(
      `${job.file}: model: export "${spec.export}" of ${spec.module} must be a function returning the initial tensors, or a defineInitialModel({ schema, create })`,
    );
  else model = await (fn as () => unknown)();
  if (typeof model === 'string' && model.length > 0) {
    const path = resolve(job.dir, model);
    try {
      return await ModelRef.file(path);
    } catch (e) {
      throw new JobConfigError(
        `${job.file}: model: ${spec.module}#${spec.export}() returned ${path}, not a readable safetensors file: ${(e as Error).message}`,
      );
    }
  }
  if (!(model instanceof Map))
    throw new JobConfigError(
      `${job.file}: model: ${spec.module}#${spec.export}() must return a Map of tensors (TensorDict) or the path of a safetensors file`,
    );
  return ModelRef.memory(model as TensorDict);
}

export function executorSpecFor(job: Job, site: string): ExecutorSpec {
  return job.config.sites[site]?.executor ?? job.config.executor;
}

/** Where a site's executor is written in job.yaml: `sites.<site>.executor` or `executor`. */
function executorField(job: Job, site: string): string {
  return job.config.sites[site] ? `sites.${site}.executor` : 'executor';
}

/** The default of `{python}`: the interpreter named `python3` on the site's PATH. */
export const DEFAULT_PYTHON = 'python3';

/**
 * What `{python}` in a script executor stands for at a site: the FLOTILLA_PYTHON environment
 * variable of the site's process, else the site's own setting (`python` of its startup kit,
 * from project.yml), else `python3` on PATH. So a job names no interpreter path of its own.
 */
export function resolvePython(siteSetting?: string, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.FLOTILLA_PYTHON;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return siteSetting ?? DEFAULT_PYTHON;
}

/** A site's own settings a job may refer to. */
export interface SiteSettings {
  /** the site's Python interpreter (`{python}`); see resolvePython */
  python?: string;
}

/** A Node training script runs TypeScript and resolves `flotilla/...` to this installation (script-preload.mjs); other interpreters ignore it. */
function scriptNodeOptions(): string {
  const preload = `--import=${new URL('./script-preload.mjs', import.meta.url).href}`;
  return process.env.NODE_OPTIONS ? `${process.env.NODE_OPTIONS} ${preload}` : preload;
}

/** The trainer host of one site: an in-process trainer, or a training script as a child process. */
export async function createTrainerHost(
  job: Job,
  site: string,
  siteIndex: number,
  numSites: number,
  workspace: string,
  log?: Logger,
  settings: SiteSettings = {},
): Promise<TrainerHost> {
  const spec = executorSpecFor(job, site);
  // the hosts (framing, child processes) load with the first trainer, not with every reader of a job (flotilla validate)
  const [{ ExProcessTrainerHost }, { InProcessTrainerHost }] = await Promise.all([
    import('../client/host/process-host.ts'),
    import('../client/host/in-process-host.ts'),
  ]);
  if ('script' in spec) {
    const python = resolvePython(settings.python);
    const fill = (s: string): string =>
      s
        .replaceAll('{python}', python)
        .replaceAll('{flotillaRoot}', FLOTILLA_ROOT)
        .replaceAll('{site}', site)
        .replaceAll('{jobDir}', job.dir)
        .replaceAll('{workspace}', workspace)
        .replaceAll('{siteIndex}', String(siteIndex))
        .replaceAll('{numSites}', String(numSites));
    return new ExProcessTrainerHost({
      command: fill(spec.script.command),
      args: spec.script.args.map(fill),
      cwd: job.dir,
      env: { NODE_OPTIONS: scriptNodeOptions(), ...Object.fromEntries(Object.entries(spec.script.env).map(([k, v]) => [k, fill(v)])) },
      helloTimeoutMs: spec.script.startTimeoutSeconds * 1000,
      cancelGraceMs: spec.script.cancelGraceSeconds * 1000,
      // the script's own prints go to the site's log
      ...(log && { logger: (line: string, stream: 'stdout' | 'stderr') => log.info({ stream }, line) }),
    });
  }
  const t = spec.trainer;
  if ('factory' in t) {
    const factory = await importFrom(job, t.module, t.factory, 'executor.trainer');
    const ctx = { site, siteIndex, numSites, jobDir: job.dir };
    if (isDefinition(factory)) {
      const args = parseDeclaredArgs(factory.schema, t.args, `${executorField(job, site)}.trainer.args`);
      if (!args.ok) throw new JobConfigError(`${job.file}: ${args.reason} (the schema ${t.module} declares)`);
      return new InProcessTrainerHost(await (factory as TrainerDefinition).create({ ...ctx, args: args.value }));
    }
    if (typeof factory !== 'function')
      throw new JobConfigError(
        `${job.file}: executor.trainer.factory "${t.factory}" must be a function or a defineTrainer({ schema, create })`,
      );
    return new InProcessTrainerHost(await (factory as TrainerFactory)({ ...ctx, args: t.args }));
  }
  const trainer = await importFrom(job, t.module, t.export, 'executor.trainer');
  if (typeof trainer !== 'function')
    throw new JobConfigError(`${job.file}: executor.trainer.export "${t.export}" must be a trainer function`);
  return new InProcessTrainerHost(trainer as Trainer);
}
