/**
 * The dashboard's live updates as server-sent events (text/event-stream): `overview` (jobs with
 * progress, sites, transfers in flight), and for the job the page shows, `job` (state, rounds,
 * progress, params, what the user may do), `points` (new metric points and texts only, by the
 * tracking store's row id) and
 * `logs` (the server log's tail). Each is sent when it changed: within 200 ms of the telemetry or the
 * tracking store reporting a change (a round, a logged value, a result in), and every tick for what moves on its own (transfer
 * rates, heartbeats). The token is checked again every tick: a stream ends when its token expires.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DashboardBackend } from './backend.ts';
import type { Telemetry } from './telemetry.ts';
import type { DashboardUser } from './token.ts';
import { type MetricRows, jobPoints, jobView, overview } from './views.ts';

export interface EventStreamOptions {
  backend: DashboardBackend;
  telemetry: Telemetry;
  rows: MetricRows;
  user: DashboardUser;
  token: string;
  job: string | null;
  tickMs: number;
}

const LOG_LINES = 200;
const KEEPALIVE_MS = 15_000;

export function serveEvents(req: IncomingMessage, res: ServerResponse, o: EventStreamOptions): void {
  const { backend: b, telemetry: t } = o;
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
  res.flushHeaders();
  const send = (event: string, data: unknown): void => void res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  let lastOverview = '';
  let lastJob = '';
  let lastLog = '';
  let lastId = 0;
  let closed = false;
  let pending: NodeJS.Timeout | null = null;

  const flush = (): void => {
    if (closed) return;
    if (typeof b.verify(o.token) === 'string') {
      send('signed-out', { error: 'token no longer valid' });
      return end();
    }
    const ov = JSON.stringify(overview(b, t));
    if (ov !== lastOverview) {
      lastOverview = ov;
      res.write(`event: overview\ndata: ${ov}\n\n`);
    }
    if (o.job === null) return;
    const view = jobView(b, t, o.rows, o.user, o.job);
    if (!view) return;
    const jv = JSON.stringify(view);
    if (jv !== lastJob) {
      lastJob = jv;
      res.write(`event: job\ndata: ${jv}\n\n`);
    }
    const p = jobPoints(o.rows, o.job, lastId);
    if (p.points.length || p.notes.length) send('points', { points: p.points, notes: p.notes });
    lastId = p.lastId;
    const logs = b.logs(o.job, LOG_LINES);
    const tail = `${logs.length}:${logs.at(-1) ?? ''}`;
    if (tail !== lastLog) {
      lastLog = tail;
      send('logs', { lines: logs });
    }
  };
  const soon = (): void => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      flush();
    }, 200);
  };
  const tick = setInterval(flush, o.tickMs);
  const keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS);
  const offTelemetry = t.onChange(soon);
  const offRows = o.rows.subscribe?.(o.job, soon);
  const unsubscribe = (): void => {
    offTelemetry();
    offRows?.();
  };
  function end(): void {
    if (closed) return;
    closed = true;
    clearInterval(tick);
    clearInterval(keepalive);
    if (pending) clearTimeout(pending);
    unsubscribe();
    res.end();
  }
  req.on('close', end);
  res.on('error', end);
  flush();
}
