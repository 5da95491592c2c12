/**
 * The Client API for training scripts, used like NVFlare's
 * `import nvflare.client as flare`:
 *
 *   import * as flare from 'flotilla/client';   // src/client/index.ts
 *   await flare.init();
 *   while (flare.isRunning()) {
 *     const model = await flare.receive();
 *     if (!model) break;
 *     ...train...
 *     await flare.send(updated);
 *   }
 *
 * The module-level functions talk to the Flotilla client that started this
 * script (ex-process, docs/client-protocol.md). A trainer written as a
 * `Trainer` function `(flare: ClientAPI) => Promise<void>` runs unchanged
 * in-process (InProcessTrainerHost) or here via runTrainer().
 */
import type { FLModel } from '../core/fl-model.ts';
import { ExProcessClient } from './trainer/socket-client.ts';
import type { ParamValue } from './api.ts';

export type { ClientAPI, MetricRecord, ParamValue, ScalarRecord, TaskInput, Trainer, TrainerContext, TrainerHost } from './api.ts';
export { isScalar } from './api.ts';
export { TaskNames } from './api.ts';
export { type TrainerDefinition, type TrainerFactory, type TrainerFactoryContext, defineTrainer } from './trainer-definition.ts';
/** The zod Flotilla validates with, for a trainer's declared schema (one copy, resolvable from any job folder). */
export { z } from 'zod';
export type { FLModel, FLModelInfo, ParamsType } from '../core/fl-model.ts';
export { MetaKeys, flModel } from '../core/fl-model.ts';
export { ExProcessClient, runTrainer } from './trainer/socket-client.ts';
export { InProcessTrainerHost, type InProcessOptions } from './host/in-process-host.ts';
export { ExProcessTrainerHost } from './host/process-host.ts';
export { type ExProcessOptions, type ExitStatus, TrainerProcessError, TrainerTaskError } from './host/child-process.ts';

let instance: ExProcessClient | undefined;

/** The process-wide client, created on first use from this process's environment. */
export function defaultClient(): ExProcessClient {
  instance ??= new ExProcessClient();
  return instance;
}

export function init(): Promise<void> {
  return defaultClient().init();
}
export function receive(): Promise<FLModel | null> {
  return defaultClient().receive();
}
export function send(model: FLModel): Promise<void> {
  return defaultClient().send(model);
}
/** Reports the task received last as failed (message and stack go to the client). */
export function fail(error: unknown): Promise<void> {
  return defaultClient().fail(error);
}
export function isRunning(): boolean {
  return defaultClient().isRunning();
}
export function siteName(): string {
  return defaultClient().siteName();
}
export function jobId(): string {
  return defaultClient().jobId();
}
export function taskName(): string {
  return defaultClient().taskName();
}
export function isTrain(): boolean {
  return defaultClient().isTrain();
}
export function isEvaluate(): boolean {
  return defaultClient().isEvaluate();
}
export function isSubmitModel(): boolean {
  return defaultClient().isSubmitModel();
}
/** A scalar (number) or a text (string) under `key`, sent to the server while the task runs. */
export function log(key: string, value: number | string, step?: number): void {
  defaultClient().log(key, value, step);
}
/** Run parameters (MLflow params, a TensorBoard text). */
export function logParams(params: Record<string, ParamValue>): void {
  defaultClient().logParams(params);
}
export function taskSignal(): AbortSignal {
  return defaultClient().taskSignal();
}
