/**
 * The Client API, modelled on NVFlare's `flare.init/receive/send/is_running`.
 * A trainer is the user's own training loop; it pulls tasks with `receive()`
 * and answers each with `send()`. The same interface is served in-process
 * (src/client/host/in-process-host.ts) and to a child process over the framing in
 * docs/client-protocol.md (src/client/host/process-host.ts).
 */
import type { FLModel } from '../core/fl-model.ts';

/** Task names every executor understands (NVFlare's AppConstants.TASK_*). */
export const TaskNames = {
  train: 'train',
  validate: 'validate',
  submitModel: 'submit_model',
} as const;

export interface ClientAPI {
  /** Connects to the hosting client. Must be called once before anything else. */
  init(): Promise<void>;
  /** The next task's model; null once the job is over (then isRunning() is false). */
  receive(): Promise<FLModel | null>;
  /** Answers the task received last. */
  send(model: FLModel): Promise<void>;
  /** False once the job is over or aborted. */
  isRunning(): boolean;
  siteName(): string;
  jobId(): string;
  /** Name of the task received last: 'train', 'validate', 'submit_model', ... */
  taskName(): string;
  isTrain(): boolean;
  isEvaluate(): boolean;
  isSubmitModel(): boolean;
  /**
   * The signal of the task received last: aborted when the server cancels it (timed out, its round
   * has its results, the job ends). A long training loop checks it and returns to receive(); its
   * send() for a cancelled task is dropped. (Ex-process trainers: never aborted yet; the host
   * drops their late result.)
   */
  taskSignal(): AbortSignal;
  /**
   * Records a scalar (a finite number) or a text (a string) under `key`, sent to the server at once
   * while the task runs: stored per job, site, round and step (docs/tracking.md), shown in the
   * simulator's table, written to metrics.jsonl and to the exporters (TensorBoard, MLflow).
   */
  log(key: string, value: number | string, step?: number): void;
  /** Records run parameters (learning rate, batch size, ...): MLflow params, a TensorBoard text. */
  logParams(params: Record<string, ParamValue>): void;
}

/** An in-process trainer: the user's training loop. */
export type Trainer = (flare: ClientAPI) => Promise<void>;

/** What the executor hands to whatever runs the trainer. */
export interface TaskInput {
  taskId: string;
  taskName: string;
  model: FLModel;
}

export interface TrainerContext {
  siteName: string;
  jobId: string;
  /** this site's working directory for the job (created by the caller) */
  workspace: string;
  /** where log(key, value) and logParams go */
  onMetric: (m: MetricRecord) => void;
}

/** A scalar a trainer logged (`kind` absent means scalar, as before texts and params existed). */
export interface ScalarRecord {
  kind?: 'scalar';
  site: string;
  key: string;
  value: number;
  step?: number;
  round?: number;
}
export type ParamValue = string | number | boolean;
/** What a trainer logged: a scalar, a text, or run parameters. */
export type MetricRecord =
  | ScalarRecord
  | { kind: 'text'; site: string; key: string; text: string; step?: number; round?: number }
  | { kind: 'params'; site: string; params: Record<string, ParamValue> };

export function isScalar(m: MetricRecord): m is ScalarRecord {
  return m.kind === undefined || m.kind === 'scalar';
}

/**
 * Runs a trainer (in this process or as a child process) and feeds it tasks.
 * A trainer that throws, exits or crashes makes runTask reject with the reason
 * (for a child: its exit code and the tail of its stderr); it never hangs.
 */
export interface TrainerHost {
  start(ctx: TrainerContext): Promise<void>;
  runTask(task: TaskInput, signal?: AbortSignal): Promise<FLModel>;
  /** Tells the trainer the job is over and waits (bounded) for it to finish. */
  stop(): Promise<void>;
}

/** Limits on what a trainer may log; the server enforces the same (src/runtime/messages.ts). */
export const LOG_LIMITS = { keyChars: 256, textChars: 65_536, params: 1000, paramChars: 4096 } as const;

/**
 * Checks a log(key, value, step) call where it is made (the trainer sees its own mistake, not a
 * dropped message): a key of 1–256 characters, a finite number or a text of at most 64 Ki
 * characters, a step that is an integer ≥ 0.
 */
export function checkLog(key: unknown, value: unknown, step: unknown): void {
  if (typeof key !== 'string' || key.length < 1 || key.length > LOG_LIMITS.keyChars)
    throw new Error(`log: key must be a string of 1–${LOG_LIMITS.keyChars} characters, got ${JSON.stringify(key)}`);
  if (typeof value === 'string') {
    if (value.length > LOG_LIMITS.textChars)
      throw new Error(`log("${key}"): a text is at most ${LOG_LIMITS.textChars} characters, got ${value.length}`);
  } else if (typeof value !== 'number' || !Number.isFinite(value))
    // JSON cannot carry NaN/Infinity: refuse here, synchronously, rather than poison the connection
    throw new Error(`log("${key}"): value must be a finite number or a string, got ${String(value)}`);
  if (step !== undefined && (typeof step !== 'number' || !Number.isInteger(step) || step < 0))
    throw new Error(`log("${key}"): step must be an integer ≥ 0, got ${JSON.stringify(step)}`);
}

/** Checks logParams(params): at most 1000 keys of 1–256 characters, values strings (≤ 4096), finite numbers or booleans. */
export function checkParams(params: unknown): asserts params is Record<string, ParamValue> {
  if (typeof params !== 'object' || params === null || Array.isArray(params))
    throw new Error('logParams: params must be an object of names to strings, numbers or booleans');
  const entries = Object.entries(params);
  if (entries.length > LOG_LIMITS.params) throw new Error(`logParams: at most ${LOG_LIMITS.params} params at once, got ${entries.length}`);
  for (const [k, v] of entries) {
    if (k.length < 1 || k.length > LOG_LIMITS.keyChars) throw new Error(`logParams: param names are 1–${LOG_LIMITS.keyChars} characters`);
    const ok =
      (typeof v === 'string' && v.length <= LOG_LIMITS.paramChars) ||
      typeof v === 'boolean' ||
      (typeof v === 'number' && Number.isFinite(v));
    if (!ok)
      throw new Error(
        `logParams: param "${k}" must be a string of at most ${LOG_LIMITS.paramChars} characters, a finite number or a boolean`,
      );
  }
}
