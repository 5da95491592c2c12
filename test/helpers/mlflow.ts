/** A real MLflow tracking server for tests (SQLite backend, loopback), and reading a job back from it over REST. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type TrackedRow, exportStep, siteLabel } from '../../src/tracking/index.ts';
import { freePort, repo } from './federation.ts';

/** The MLflow server's venv that .ci/run builds (its own: mlflow's numpy must not replace Debian's in .venv). */
export const MLFLOW = process.env.FLOTILLA_MLFLOW ?? join(repo, '.venv-mlflow', 'bin', 'mlflow');

export interface MlflowServer {
  uri: string;
  stop(): Promise<void>;
}

export async function startMlflow(dir: string, timeoutMs = 120_000): Promise<MlflowServer> {
  if (!existsSync(MLFLOW)) throw new Error(`${MLFLOW} does not exist: bash .ci/run installs MLflow's server into .venv-mlflow`);
  const port = await freePort();
  const child: ChildProcess = spawn(
    MLFLOW,
    [
      'server',
      '--backend-store-uri',
      `sqlite:///${join(dir, 'mlflow.db')}`,
      '--default-artifact-root',
      join(dir, 'artifacts'),
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--workers',
      '1',
    ],
    {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      // its own process group, so that stop() ends uvicorn's workers too; no job executor (huey
      // consumers: 7 more Python processes the tests never use)
      detached: true,
      env: { ...process.env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION: 'false' },
    },
  );
  const group = (signal: NodeJS.Signals): void => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // already gone
    }
  };
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const uri = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mlflow server exited with ${child.exitCode}: ${out.slice(-3000)}`);
    if (Date.now() > deadline) {
      group('SIGKILL');
      throw new Error(`mlflow server did not answer within ${timeoutMs} ms: ${out.slice(-3000)}`);
    }
    try {
      // not /health: the tracking store is opened on the first API call (seconds of imports)
      const r = await fetch(`${uri}/api/2.0/mlflow/experiments/search?max_results=1`, { signal: AbortSignal.timeout(30_000) });
      if (r.ok) break;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  return {
    uri,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        group('SIGTERM');
        const t = setTimeout(() => group('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      group('SIGKILL'); // what is left of the group
    },
  };
}

async function call<T>(uri: string, path: string, body?: object): Promise<T> {
  const res = await fetch(`${uri}/api/2.0/mlflow/${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { 'content-type': 'application/json' },
    ...(body && { body: JSON.stringify(body) }),
  });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

interface Run {
  info: { run_id: string; run_name: string; status: string };
  data: { metrics?: { key: string }[]; params?: { key: string; value: string }[]; tags?: { key: string; value: string }[] };
}

export interface MlflowJob {
  runs: Record<
    string,
    {
      id: string;
      status: string;
      parent: string | undefined;
      params: Record<string, string>;
      tags: Record<string, string>;
      metrics: Record<string, [number, number][]>;
    }
  >;
}

/** [step, value] pairs in one order (MLflow keeps no order among a metric's points of the same timestamp). */
const byStep = (h: [number, number][]): [number, number][] => h.sort((a, b) => a[0] - b[0] || a[1] - b[1]);

/** What MLflow should hold for a job's rows, per run name: params, text tags, metric histories. */
export function mlflowExpected(rows: readonly TrackedRow[]) {
  const runs: Record<
    string,
    { params: Record<string, string>; texts: Record<string, string>; metrics: Record<string, [number, number][]> }
  > = {};
  for (const r of rows) {
    const run = (runs[siteLabel(r.site)] ??= { params: {}, texts: {}, metrics: {} });
    if (r.kind === 'scalar') (run.metrics[r.key] ??= []).push([exportStep(r), r.value!]);
    else if (r.kind === 'param') run.params[r.key] ??= r.text!;
    else run.texts[`text/${r.key}`] = r.text!;
  }
  for (const run of Object.values(runs)) for (const h of Object.values(run.metrics)) byStep(h);
  return runs;
}

/** One job's runs in an experiment as MLflow has them: per run name, its params, tags and every metric's history as [step, value]. */
export async function readMlflowJob(uri: string, experiment: string, jobId: string): Promise<MlflowJob> {
  const e = await call<{ experiment: { experiment_id: string } }>(
    uri,
    `experiments/get-by-name?experiment_name=${encodeURIComponent(experiment)}`,
  );
  const { runs = [] } = await call<{ runs?: Run[] }>(uri, 'runs/search', {
    experiment_ids: [e.experiment.experiment_id],
    filter: `tags.\`flotilla.job_id\` = '${jobId}'`,
    max_results: 1000,
  });
  const out: MlflowJob = { runs: {} };
  for (const r of runs) {
    const tags = Object.fromEntries((r.data.tags ?? []).map((t) => [t.key, t.value]));
    const metrics: Record<string, [number, number][]> = {};
    for (const key of new Set((r.data.metrics ?? []).map((m) => m.key))) {
      const h = await call<{ metrics?: { value: number; step: number; timestamp: number }[] }>(
        uri,
        `metrics/get-history?run_id=${r.info.run_id}&metric_key=${encodeURIComponent(key)}&max_results=25000`,
      );
      metrics[key] = byStep((h.metrics ?? []).map((m) => [m.step, m.value]));
    }
    out.runs[r.info.run_name] = {
      id: r.info.run_id,
      status: r.info.status,
      parent: tags['mlflow.parentRunId'],
      params: Object.fromEntries((r.data.params ?? []).map((p) => [p.key, p.value])),
      tags,
      metrics,
    };
  }
  return out;
}
