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
  /** Records a metric (shown in the simulator's table and written to metrics.jsonl). */
  log(key: string, value: number, step?: number): void;
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
  /** where log(key, value) goes */
  onMetric: (m: MetricRecord) => void;
}

export interface MetricRecord {
  site: string;
  key: string;
  value: number;
  step?: number;
  round?: number;
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
