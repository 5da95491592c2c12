/** Experiment tracking: the store of what sites log (docs/tracking.md) and its exporters. */
export { TrackingStore, type TrackingListener, type TrackingStoreOptions, migrate } from './store.ts';
export { RESULT_PREFIX, trackLogged, trackRound } from './record.ts';
export {
  SERVER_SITE,
  TRACKED_KINDS,
  TRACKING_LIMITS,
  TrackedRowSchema,
  type TrackedInput,
  type TrackedKind,
  type TrackedRow,
  siteLabel,
} from './types.ts';
export { type AttachedExporters, type TrackingExporter, attachExporters, exportJob } from './exporter.ts';
export { TensorBoardExporter, exportStep, exportTag } from './tensorboard.ts';
export { MlflowError, MlflowExporter, type MlflowOptions, mlflowKey } from './mlflow.ts';
export { mlflowUriProblem } from './mlflow-uri.ts';
export { type JobExportOptions, mlflowStatePath, startJobExporters, tensorboardDir } from './job-exporters.ts';
