/**
 * A federation in the test process for the dashboard and Prometheus tests: a FederationServer with
 * its observability options, two sites over mutual TLS, and admins of several roles.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AdminClient } from '../../src/admin/admin-client.ts';
import { FederationServer, type FederationServerOptions } from '../../src/deploy/server.ts';
import { FederationSite } from '../../src/deploy/site.ts';
import { loadKit } from '../../src/provision/kit.ts';
import { parseProject } from '../../src/provision/project.ts';
import { provision } from '../../src/provision/provision.ts';
import { capture, freePort, until } from './federation.ts';

export const ADMINS = {
  boss: 'boss@hub.org', // project_admin
  viewer: 'viewer@hub.org', // member: views only
} as const;

export interface Observed {
  server: FederationServer;
  admin: (who: keyof typeof ADMINS) => AdminClient;
  kits: Record<string, string>;
  lines: string[];
  stop(): Promise<void>;
}

export async function observedFederation(
  dir: string,
  extra: Omit<FederationServerOptions, 'kit' | 'workspace' | 'log'> = {},
  sites = ['site-1', 'site-2'],
): Promise<Observed> {
  const project = parseProject({
    name: 'observed',
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1 },
      ...sites.map((name, i) => ({ type: 'client', name, org: `org-${i + 1}` })),
      { type: 'admin', name: ADMINS.boss, org: 'hub', role: 'project_admin' },
      { type: 'admin', name: ADMINS.viewer, org: 'hub', role: 'member' },
    ],
  });
  const kits = (await provision(project, { outDir: dir })).kits;
  const { log, lines } = capture();
  const server = new FederationServer({
    kit: loadKit(kits.server!, 'server'),
    workspace: join(dir, 'server-ws'),
    host: '127.0.0.1',
    port: 0,
    log,
    ...extra,
  });
  const port = await server.start();
  const running = sites.map((name) => {
    const s = new FederationSite({ kit: loadKit(kits[name]!, 'client'), workspace: join(dir, name), host: '127.0.0.1', port, log });
    return { s, done: s.run() };
  });
  const admins: AdminClient[] = [];
  await until('the sites to connect', () => server.siteList().length === sites.length);
  return {
    server,
    kits,
    lines,
    admin: (who) => {
      const a = new AdminClient(kits[ADMINS[who]]!, { host: '127.0.0.1', port });
      admins.push(a);
      return a;
    },
    async stop() {
      for (const a of admins) a.close();
      for (const r of running) r.s.stop('test over');
      await Promise.all(running.map((r) => r.done));
      await server.stop();
    },
  };
}

/**
 * A Prometheus server of our own (Debian's `prometheus`), scraping `target` (plain HTTP) every second
 * as job "flotilla", and, given `secure`, the dashboard's HTTPS /metrics with a bearer token as job
 * "flotilla-https", on loopback.
 */
export async function startPrometheus(
  dir: string,
  target: string,
  secure?: { target: string; token: string; caFile: string; serverName: string },
): Promise<{ url: string; stop(): Promise<void>; log: () => string }> {
  mkdirSync(dir, { recursive: true });
  const config = join(dir, 'prometheus.yml');
  const lines = [
    'global:',
    '  scrape_interval: 1s',
    'scrape_configs:',
    '  - job_name: flotilla',
    '    static_configs:',
    `      - targets: ['${target}']`,
  ];
  if (secure) {
    writeFileSync(join(dir, 'token'), secure.token);
    lines.push(
      '  - job_name: flotilla-https',
      '    scheme: https',
      '    authorization:',
      '      type: Bearer',
      `      credentials_file: ${join(dir, 'token')}`,
      '    tls_config:',
      `      ca_file: ${secure.caFile}`,
      `      server_name: ${secure.serverName}`,
      '    static_configs:',
      `      - targets: ['${secure.target}']`,
    );
  }
  writeFileSync(config, `${lines.join('\n')}\n`);
  const port = await freePort();
  let out = '';
  const child: ChildProcess = spawn(
    process.env.PROMETHEUS ?? 'prometheus',
    [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}:\n${out}`);
    const ok = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`prometheus did not get ready:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    log: () => out,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

interface PromVector {
  status: string;
  data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

/** A PromQL instant query: each series' labels and value. */
export async function promQuery(url: string, query: string): Promise<{ metric: Record<string, string>; value: number }[]> {
  const r = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(query)}`);
  // a Prometheus still starting its query engine answers 503: no series yet
  if (r.status === 503) return [];
  const body = (await r.json()) as PromVector;
  if (body.status !== 'success') throw new Error(`query ${query} failed: ${JSON.stringify(body)}`);
  return body.data.result.map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
}
