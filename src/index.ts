/**
 * `flotilla`: the public API in one import. The Client API's module-level
 * functions (init, receive, send, ...) are `flotilla/client`; each layer is
 * also its own entry point (`flotilla/core`, `flotilla/workflows`, ...).
 */
export * from './core/index.ts';
export type { ClientAPI, MetricRecord, TaskInput, Trainer, TrainerContext, TrainerHost } from './client/index.ts';
export { TaskNames, InProcessTrainerHost, ExProcessTrainerHost, ExProcessClient, runTrainer } from './client/index.ts';
export * from './runtime/job.ts';
export * from './runtime/job-config.ts';
export * from './workflows/index.ts';
export * from './aggregators/index.ts';
export * from './simulator/index.ts';
