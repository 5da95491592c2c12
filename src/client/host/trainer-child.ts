/**
 * The trainer's operating-system process, as the ex-process host sees it: spawned with the
 * socket's address in its environment, its output relayed line by line, how it ended, and errors
 * that name the command and quote the tail of its stderr.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { PROTOCOL_VERSION } from '../framing.ts';
import {
  CLOSE_AFTER_EXIT_MS,
  type ExProcessOptions,
  type ExitStatus,
  LineTail,
  TrainerProcessError,
  deferred,
  splitLines,
  within,
} from './child-process.ts';

export interface TrainerEnv {
  socket: string;
  siteName: string;
  jobId: string;
  workspace: string;
}

export class TrainerChild {
  private child: ChildProcessByStdio<null, Readable, Readable> | undefined;
  private status: ExitStatus | undefined;
  /** the child has exited and its output is drained (or it could not be started) */
  readonly closed = deferred<void>();
  private readonly stderrTail = new LineTail();

  constructor(private readonly opts: ExProcessOptions) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }
  /** How the child ended, once it has. */
  get exit(): ExitStatus | undefined {
    return this.status;
  }
  get running(): boolean {
    return this.child !== undefined && this.status === undefined;
  }
  get stderr(): string {
    return this.stderrTail.text();
  }

  commandLine(): string {
    return [this.opts.command, ...this.opts.args].join(' ');
  }

  /** Starts the process; `onSpawnError` hears of a command that could not be started (ENOENT, EACCES). */
  spawn(e: TrainerEnv, onSpawnError: (err: TrainerProcessError) => void): void {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, ...this.opts.env })) if (v !== undefined) env[k] = v;
    Object.assign(env, {
      FLOTILLA_SOCKET: e.socket,
      FLOTILLA_PROTOCOL: String(PROTOCOL_VERSION),
      FLOTILLA_SITE_NAME: e.siteName,
      FLOTILLA_JOB_ID: e.jobId,
      FLOTILLA_WORKSPACE: e.workspace,
    });
    const child = spawn(this.opts.command, this.opts.args, { cwd: this.opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const log = this.opts.logger;
    splitLines(child.stdout, (l) => log?.(l, 'stdout'));
    splitLines(child.stderr, (l) => {
      this.stderrTail.push(l);
      log?.(l, 'stderr');
    });
    child.on('error', (err) => {
      // spawn failed: there will be no exit status
      onSpawnError(new TrainerProcessError(`could not start trainer "${this.commandLine()}": ${err.message}`, undefined, ''));
      this.closed.resolve();
    });
    child.on('exit', (code, signal) => {
      this.status = { code, signal };
      // a grandchild holding our pipes open must not delay the report forever
      setTimeout(() => this.closed.resolve(), CLOSE_AFTER_EXIT_MS).unref();
    });
    child.on('close', (code, signal) => {
      this.status ??= { code, signal };
      this.closed.resolve();
    });
  }

  /** An error about the trainer, with the tail of its stderr. */
  error(message: string): TrainerProcessError {
    const t = this.stderrTail.text();
    const tail = t ? `\n--- last lines of the trainer's stderr ---\n${t}` : "\n(the trainer's stderr was empty)";
    return new TrainerProcessError(message + tail, this.status, t);
  }

  /** The error for a process that ended; `when` says what it was doing ('' if nothing in particular). */
  exitError(when: string): TrainerProcessError {
    const x = this.status;
    const status = !x ? 'ended' : x.signal ? `was killed by signal ${x.signal}` : `exited with code ${x.code}`;
    return this.error(`trainer process ${this.pid ?? '?'} (${this.commandLine()}) ${status}${when}`);
  }

  /** Kills the process if it still runs and waits (a while) for it to be reaped. */
  async killAndReap(): Promise<void> {
    const c = this.child;
    if (!c || this.status || c.pid === undefined) return;
    c.kill('SIGKILL');
    await within(this.closed.promise, 5000);
  }
}
