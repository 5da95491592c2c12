/**
 * What the host side needs to run a trainer as a child process, apart from the task protocol:
 * its options, how it ended (ExitStatus and the errors that carry it), the tail of its output.
 */
import type { Readable } from 'node:stream';

export interface ExProcessOptions {
  command: string;
  args: string[];
  /** working directory of the child (default: this process's) */
  cwd?: string;
  /** added to this process's environment; undefined removes a variable */
  env?: Record<string, string | undefined>;
  /** how long to wait for the child to connect and say hello (default 60 s) */
  helloTimeoutMs?: number;
  /** how long stop() waits for the child to exit before SIGKILL (default 10 s) */
  stopTimeoutMs?: number;
  /**
   * how long a trainer sent `cancel` for its task may go on with it (not answering and not asking
   * for the next task) before it is killed and started again (default 10 s)
   */
  cancelGraceMs?: number;
  /** receives every line the child prints */
  logger?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** where the socket's private temp dir goes (default os.tmpdir(); socket paths are limited to ~107 bytes) */
  socketDir?: string;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The trainer process died, hung or broke the protocol. */
export class TrainerProcessError extends Error {
  override readonly name = 'TrainerProcessError';
  constructor(
    message: string,
    readonly exit: ExitStatus | undefined,
    readonly stderrTail: string,
  ) {
    super(message);
  }
}

/** The trainer reported a failed task (`failed` frame); the process lives on. */
export class TrainerTaskError extends Error {
  override readonly name = 'TrainerTaskError';
  constructor(
    message: string,
    readonly traceback: string | undefined,
  ) {
    super(message);
  }
}

const TAIL_LINES = 50;
const TAIL_BYTES = 8 * 1024;
/** after 'exit', how long to wait for the child's stdio to drain ('close') */
export const CLOSE_AFTER_EXIT_MS = 1000;
/** after the socket drops, how long to wait for the exit status worth reporting */
export const EXIT_AFTER_DISCONNECT_MS = 2000;
/** Linux sun_path is 108 bytes including the NUL */
export const MAX_SOCKET_PATH = 107;

/** The last lines a stream printed, bounded in lines and bytes. */
export class LineTail {
  private lines: string[] = [];
  private bytes = 0;
  push(line: string): void {
    const l = line.length > TAIL_BYTES ? `…${line.slice(-TAIL_BYTES)}` : line;
    this.lines.push(l);
    this.bytes += Buffer.byteLength(l) + 1;
    while (this.lines.length > TAIL_LINES || this.bytes > TAIL_BYTES) this.bytes -= Buffer.byteLength(this.lines.shift()!) + 1;
  }
  text(): string {
    return this.lines.join('\n');
  }
}

/** Splits a child's output into lines, for the logger and the tail. */
export function splitLines(stream: Readable, onLine: (line: string) => void): void {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (s: string) => {
    partial += s;
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    // a runaway line without newline must not grow without bound
    if (partial.length > TAIL_BYTES) {
      parts.push(partial);
      partial = '';
    }
    for (const p of parts) onLine(p.endsWith('\r') ? p.slice(0, -1) : p);
  });
  stream.on('end', () => {
    if (partial) onLine(partial);
    partial = '';
  });
  stream.on('error', () => {}); // the exit status tells the story
}

export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** true if p settled within ms */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((res) => {
      timer = setTimeout(() => res(false), ms);
    }),
  ]);
  clearTimeout(timer);
  return r;
}

export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}
