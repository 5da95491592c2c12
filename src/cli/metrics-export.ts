/**
 * `flotilla metrics <workspace> --tensorboard <dir> | --mlflow <uri>`: a recorded job exported after
 * the fact, with the exporters the server and the simulator run live (docs/tracking.md): a job run
 * without --mlflow, or a server's jobs.sqlite, sent to an MLflow server later.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MlflowExporter } from '../tracking/mlflow.ts';
import { exportJob, type TrackingExporter } from '../tracking/exporter.ts';
import type { TrackingStore } from '../tracking/store.ts';
import { TensorBoardExporter } from '../tracking/tensorboard.ts';

export interface MetricsExportOptions {
  tensorboard?: string;
  mlflow?: string;
  experiment?: string;
}

/** The experiment a job goes to: the flag, else the job's name from the simulation's summary.json, else its id. */
function experimentOf(file: string, jobId: string, flag: string | undefined): string {
  if (flag) return flag;
  const summary = join(dirname(file), 'summary.json');
  if (existsSync(summary)) {
    const s = JSON.parse(readFileSync(summary, 'utf8')) as { jobId?: unknown; job?: unknown };
    if (s.jobId === jobId && typeof s.job === 'string') return s.job;
  }
  return jobId;
}

/** Exports one job of the store; returns what was written where, for the command's output. */
export async function exportRecordedJob(store: TrackingStore, file: string, jobId: string, o: MetricsExportOptions): Promise<string[]> {
  const exporters: TrackingExporter[] = [];
  const done: string[] = [];
  const rows = store.all(jobId).length;
  if (o.tensorboard) {
    exporters.push(new TensorBoardExporter(o.tensorboard));
    done.push(`${rows} rows of job ${jobId} as TensorBoard runs in ${o.tensorboard} (tensorboard --logdir ${o.tensorboard})`);
  }
  if (o.mlflow) {
    const experiment = experimentOf(file, jobId, o.experiment);
    exporters.push(new MlflowExporter({ uri: o.mlflow, experiment, jobId }));
    done.push(`${rows} rows of job ${jobId} to MLflow at ${o.mlflow}, experiment "${experiment}"`);
  }
  await exportJob(store, jobId, exporters, 'FINISHED');
  return done;
}
