/**
 * The Prometheus endpoint on a port of its own: GET /metrics answers the text exposition of the
 * server's Telemetry, anything else 404. Plain HTTP and no token, like most exporters: bind it to
 * loopback or a monitoring network (`server start --metrics-port`, default host 127.0.0.1). The
 * dashboard's HTTPS port serves /metrics too, for a bearer token (docs/dashboard.md).
 */
import type { Logger } from '../util/log.ts';
import { type WebServer, listen, sendText } from './http.ts';
import type { Telemetry } from './telemetry.ts';

export interface MetricsEndpointOptions {
  host: string;
  port: number;
  telemetry: Telemetry;
  log: Logger;
}

export function startMetricsEndpoint(opts: MetricsEndpointOptions): Promise<WebServer> {
  return listen(
    { host: opts.host, port: opts.port },
    async (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' || path !== '/metrics') return sendText(res, 404, 'text/plain; charset=utf-8', 'only GET /metrics here\n');
      const { contentType, body } = await opts.telemetry.exposition();
      sendText(res, 200, contentType, body);
    },
    opts.log,
  );
}
