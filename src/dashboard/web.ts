/**
 * The web dashboard: a static page (assets/) and a JSON API under /api, with live updates as
 * server-sent events (/api/events). Nothing but the page itself is answered without a valid
 * token (`Authorization: Bearer <token>`, from `flotilla admin <kit> dashboard-token`); the page
 * keeps the token in the tab's sessionStorage and sends it as a header, never as a cookie, so no
 * other site can make a browser act with it. /metrics is here too, for Prometheus with a bearer
 * token (docs/dashboard.md).
 */
import { createReadStream, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../util/log.ts';
import type { DashboardBackend } from './backend.ts';
import { type ListenOptions, type WebServer, listen, sendJson, sendText } from './http.ts';
import { serveEvents } from './events.ts';
import type { Telemetry } from './telemetry.ts';
import { type MetricRows, jobPoints, jobView, overview } from './views.ts';
import type { DashboardUser } from './token.ts';

export interface DashboardOptions extends ListenOptions {
  backend: DashboardBackend;
  telemetry: Telemetry;
  /** the tracking store's rows: the plotted metrics */
  rows: MetricRows;
  log: Logger;
  /** how often the event stream sends what changed (default 1000 ms) */
  tickMs?: number;
}

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  // uPlot positions its cursor and legend with style attributes
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

// beside this module: src/dashboard/assets/ in a checkout, dist/dashboard/assets/ (copied by `npm run build`) in the package
const assetsDir = fileURLToPath(new URL('./assets/', import.meta.url));
const require = createRequire(import.meta.url);

/** The files the page is made of: name → [path, content type]. */
const ASSETS: Record<string, [string, string]> = {
  ...Object.fromEntries(
    ['app.js', 'state.js', 'dom.js', 'api.js', 'signin.js', 'overview.js', 'job-page.js'].map((m) => [
      m,
      [`${assetsDir}${m}`, 'text/javascript; charset=utf-8'] as [string, string],
    ]),
  ),
  'style.css': [`${assetsDir}style.css`, 'text/css; charset=utf-8'],
  'uPlot.iife.min.js': [require.resolve('uplot/dist/uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
  'uPlot.min.css': [require.resolve('uplot/dist/uPlot.min.css'), 'text/css; charset=utf-8'],
};

export function bearer(req: IncomingMessage): string | null {
  const h = req.headers.authorization;
  const m = typeof h === 'string' ? /^Bearer\s+(\S+)$/i.exec(h) : null;
  return m ? m[1]! : null;
}

export function startDashboard(opts: DashboardOptions): Promise<WebServer> {
  const { backend: b, telemetry: t, rows } = opts;
  const index = readFileSync(`${assetsDir}index.html`, 'utf8');

  const authed = (req: IncomingMessage, res: ServerResponse): DashboardUser | null => {
    const token = bearer(req);
    const user = token === null ? 'no token: sign in with one from `flotilla admin <kit> dashboard-token`' : b.verify(token);
    if (typeof user === 'string') {
      res.setHeader('www-authenticate', 'Bearer realm="flotilla"');
      sendJson(res, 401, { error: user });
      return null;
    }
    return user;
  };

  return listen(
    opts,
    async (req, res) => {
      const url = new URL(req.url ?? '/', 'http://dashboard');
      const path = url.pathname;
      const method = req.method ?? 'GET';
      if (method === 'GET' && (path === '/' || path === '/index.html')) {
        res.setHeader('content-security-policy', CSP);
        return sendText(res, 200, 'text/html; charset=utf-8', index);
      }
      if (method === 'GET' && path.startsWith('/assets/')) {
        const a = ASSETS[path.slice('/assets/'.length)];
        if (!a) return sendJson(res, 404, { error: 'no such asset' });
        res.setHeader('cache-control', 'private, max-age=300');
        return sendText(res, 200, a[1], readFileSync(a[0]));
      }
      const user = authed(req, res);
      if (!user) return;
      if (method === 'GET' && path === '/metrics') {
        const { contentType, body } = await t.exposition();
        return sendText(res, 200, contentType, body);
      }
      if (method === 'GET' && path === '/api/me') return sendJson(res, 200, { user, title: b.title, may: { audit: b.may(user, 'audit') } });
      if (method === 'GET' && path === '/api/overview') return sendJson(res, 200, overview(b, t));
      if (method === 'GET' && path === '/api/audit') {
        const denied = b.may(user, 'audit');
        return denied ? sendJson(res, 403, { error: denied }) : sendJson(res, 200, b.audit(500));
      }
      if (method === 'GET' && path === '/api/events')
        return serveEvents(req, res, {
          backend: b,
          telemetry: t,
          rows,
          user,
          token: bearer(req)!,
          job: url.searchParams.get('job'),
          tickMs: opts.tickMs ?? 1000,
        });
      const m = /^\/api\/jobs\/([^/]+)(\/[a-z]+)?(\/.*)?$/.exec(path);
      if (!m) return sendJson(res, 404, { error: `no ${method} ${path}` });
      const id = decodeURIComponent(m[1]!);
      const sub = m[2] ?? '';
      if (method === 'GET' && sub === '') {
        const v = jobView(b, t, rows, user, id);
        return v ? sendJson(res, 200, { ...v, ...jobPoints(rows, id) }) : sendJson(res, 404, { error: `no job ${id}` });
      }
      if (method === 'GET' && sub === '/metrics') {
        if (!b.job(id)) return sendJson(res, 404, { error: `no job ${id}` });
        const after = Math.max(0, Number(url.searchParams.get('after') ?? 0) || 0);
        const limit = Math.min(Math.max(Number(url.searchParams.get('limit') ?? 10_000) || 10_000, 1), 10_000);
        return sendJson(res, 200, rows.metricsSince(id, after, limit));
      }
      if (method === 'GET' && sub === '/logs') {
        if (!b.job(id)) return sendJson(res, 404, { error: `no job ${id}` });
        const n = Math.min(Math.max(Number(url.searchParams.get('lines') ?? 200) || 200, 1), 5000);
        return sendJson(res, 200, { lines: b.logs(id, n) });
      }
      if (method === 'POST' && sub === '/abort') {
        const r = await b.abort(user, id);
        return sendJson(res, r.ok ? 200 : statusOf(r.code), r.ok ? { message: r.message } : { error: r.message, code: r.code });
      }
      if (method === 'GET' && sub === '/files' && !m[3]) {
        const r = await b.files(user, id);
        return r.ok ? sendJson(res, 200, { files: r.files }) : sendJson(res, statusOf(r.code), { error: r.message, code: r.code });
      }
      if (method === 'GET' && sub === '/files' && m[3]) {
        const r = await b.file(user, id, decodeURIComponent(m[3].slice(1)));
        if (!r.ok) return sendJson(res, statusOf(r.code), { error: r.message, code: r.code });
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': r.size,
          'content-disposition': `attachment; filename="${basename(r.path).replace(/[^A-Za-z0-9._-]/g, '_')}"`,
        });
        createReadStream(r.path).pipe(res);
        return;
      }
      return sendJson(res, 404, { error: `no ${method} ${path}` });
    },
    opts.log,
  );
}

function statusOf(code: string): number {
  return code === 'denied' || code === 'not_admin'
    ? 403
    : code === 'not_found'
      ? 404
      : code === 'conflict'
        ? 409
        : code === 'bad_arguments'
          ? 400
          : 500;
}
