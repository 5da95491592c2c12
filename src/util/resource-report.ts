/**
 * A process's own resource report, for soak runs (scripts/soak.ts): with FLOTILLA_RESOURCE_REPORT=<dir>
 * in its environment, a `server start` or `client start` process, and a TypeScript ex-process trainer
 * from its init(), appends one JSON line to <dir>/<pid>.jsonl every FLOTILLA_RESOURCE_REPORT_MS
 * (default 1000): its active handles and requests by type (`process.getActiveResourcesInfo()`: what
 * keeps the event loop alive, so timers that are not unref'd, sockets, child processes, fs requests) and
 * its memory. Only the process itself can see these; /proc shows RSS and descriptors, not timers or the heap.
 * With FLOTILLA_RESOURCE_REPORT_GC=1 and a process started with --expose-gc, each line is measured
 * right after a full collection, so heap and external memory are what is still referenced (a leak),
 * not garbage waiting for the next collection.
 * The report's own timer is unref'd: it never keeps the process alive, and is not in its own count.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';

export const RESOURCE_REPORT_ENV = 'FLOTILLA_RESOURCE_REPORT';
export const RESOURCE_REPORT_MS_ENV = 'FLOTILLA_RESOURCE_REPORT_MS';
export const RESOURCE_REPORT_GC_ENV = 'FLOTILLA_RESOURCE_REPORT_GC';

export const ResourceLineSchema = z.object({
  t: z.number(),
  pid: z.number().int(),
  /** active handles and requests by type (TCPWrap, Timeout, FSReqCallback, ...) */
  resources: z.record(z.string(), z.number().int()),
  /** sum of `resources` */
  active: z.number().int(),
  rss: z.number(),
  heapUsed: z.number(),
  external: z.number(),
  arrayBuffers: z.number(),
  /** measured right after a full collection */
  gc: z.boolean(),
});
export type ResourceLine = z.infer<typeof ResourceLineSchema>;

export function resourceLine(collect = false): ResourceLine {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (collect && gc) gc();
  const resources: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
  const m = process.memoryUsage();
  return {
    t: Date.now(),
    pid: process.pid,
    resources,
    active: Object.values(resources).reduce((a, b) => a + b, 0),
    rss: m.rss,
    heapUsed: m.heapUsed,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    gc: collect && gc !== undefined,
  };
}

/** Starts the report when the environment asks for one; returns its stop (a no-op otherwise). */
export function startResourceReport(env: NodeJS.ProcessEnv = process.env): () => void {
  const dir = env[RESOURCE_REPORT_ENV];
  if (!dir) return () => undefined;
  const raw = env[RESOURCE_REPORT_MS_ENV] ?? '1000';
  const ms = Number(raw);
  if (!Number.isFinite(ms) || ms < 10) throw new Error(`${RESOURCE_REPORT_MS_ENV} must be a number of milliseconds ≥ 10, got "${raw}"`);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${process.pid}.jsonl`);
  const collect = env[RESOURCE_REPORT_GC_ENV] === '1';
  const write = (): void => appendFileSync(file, `${JSON.stringify(resourceLine(collect))}\n`);
  write();
  const timer = setInterval(write, ms);
  timer.unref();
  return () => clearInterval(timer);
}
