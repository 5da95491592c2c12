/** The exporters a job gets on the server and in the simulator: TensorBoard always, MLflow when asked. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../util/log.ts';
import { type AttachedExporters, type TrackingExporter, attachExporters } from './exporter.ts';
import { MlflowExporter } from './mlflow.ts';
import type { TrackingStore } from './store.ts';
import { TensorBoardExporter } from './tensorboard.ts';

export interface JobExportOptions {
  store: TrackingStore;
  jobId: string;
  jobName: string;
  /** the job's server folder: TensorBoard runs go to <serverDir>/tensorboard/<site>/, MLflow's run ids to <serverDir>/mlflow-runs.json */
  serverDir: string;
  /** an MLflow tracking server (http://host:port); default none */
  mlflowUri?: string | undefined;
  /**
   * The job ran before in this folder (a server restarted under it): go on from what that run
   * exported. `stale`: the sites with rows the store dropped since (the interrupted round's).
   */
  resumed?: { stale: ReadonlySet<string> } | undefined;
  log: Logger;
}

/** Where a job's TensorBoard runs are: `tensorboard --logdir` this. */
export function tensorboardDir(serverDir: string): string {
  return join(serverDir, 'tensorboard');
}

/** Where a job's MLflow run ids are kept (a resumed job goes on in the same runs). */
export function mlflowStatePath(serverDir: string): string {
  return join(serverDir, 'mlflow-runs.json');
}

export function startJobExporters(o: JobExportOptions): AttachedExporters {
  const tb = new TensorBoardExporter(tensorboardDir(o.serverDir));
  // resumed: the runs hold each row of the store once, none of the interrupted round's
  if (o.resumed && existsSync(tb.logdir)) tb.rewrite(o.store.all(o.jobId));
  const exporters: TrackingExporter[] = [tb];
  if (o.mlflowUri) {
    const ml = new MlflowExporter({ uri: o.mlflowUri, experiment: o.jobName, jobId: o.jobId, statePath: mlflowStatePath(o.serverDir) });
    if (o.resumed) ml.resume(o.store.all(o.jobId), o.resumed.stale);
    exporters.push(ml);
  }
  return attachExporters(o.store, o.jobId, exporters, o.log);
}
