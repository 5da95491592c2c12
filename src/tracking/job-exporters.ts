/** The exporters a job gets on the server and in the simulator: TensorBoard always, MLflow when asked. */
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
  /** the job's server folder: TensorBoard runs go to <serverDir>/tensorboard/<site>/ */
  serverDir: string;
  /** an MLflow tracking server (http://host:port); default none */
  mlflowUri?: string | undefined;
  log: Logger;
}

/** Where a job's TensorBoard runs are: `tensorboard --logdir` this. */
export function tensorboardDir(serverDir: string): string {
  return join(serverDir, 'tensorboard');
}

export function startJobExporters(o: JobExportOptions): AttachedExporters {
  const exporters: TrackingExporter[] = [new TensorBoardExporter(tensorboardDir(o.serverDir))];
  if (o.mlflowUri) exporters.push(new MlflowExporter({ uri: o.mlflowUri, experiment: o.jobName, jobId: o.jobId }));
  return attachExporters(o.store, o.jobId, exporters, o.log);
}
