/**
 * Round times of a job while unauthenticated peers hold idle TCP connections to the server: a
 * provisioned project, the server and two sites in this process over real sockets (gRPC with
 * mutual TLS for sessions, the TLS data plane for the job), and a flood in a child process that
 * keeps N connections open to the two ports (half each) without ever starting a TLS handshake,
 * opening a new one whenever the server closes one (the handshake timeout, 10 s by default).
 * For each N, the same job (fedavg, --rounds rounds of a trainer sleeping --sleep-ms) runs once;
 * prints one JSON object with the round seconds per N and how many connections the server closed.
 *
 *   nice -n 10 node --conditions=flotilla-source --import tsx bench/idle-connections.ts [--idle 0,2000] [--rounds 8]
 *       [--sleep-ms 250] [--out bench/results/idle-connections.json]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient } from '../src/admin/admin-client.ts';
import { FederationServer } from '../src/deploy/server.ts';
import { FederationSite } from '../src/deploy/site.ts';
import { loadKit } from '../src/provision/kit.ts';
import { parseProject } from '../src/provision/project.ts';
import { provision } from '../src/provision/provision.ts';
import type { RoundSummary } from '../src/workflows/workflow.ts';
import { tinyJob } from '../test/helpers/federation.ts';
import { commitFacts } from './commit.ts';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);

function opt(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
}
const idleCounts = opt('idle', '0,2000').split(',').map(Number);
const rounds = Number(opt('rounds', '8'));
const sleepMs = Number(opt('sleep-ms', '250'));
const outFile = opt('out', '');

/** The flood: keeps `n` idle connections open across the ports, reopening each one the server closes; reports on stdout. */
const FLOOD = `
const net = require('node:net');
const [n, ...ports] = process.argv.slice(1).map(Number);
let open = 0, closedByServer = 0, stopping = false;
function one(port) {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  s.once('connect', () => { open++; if (open === n) process.stdout.write('ready\\n'); });
  s.once('close', () => { open--; if (stopping) return; closedByServer++; setTimeout(() => one(port), 10); });
}
for (let i = 0; i < n; i++) one(ports[i % ports.length]);
if (n === 0) process.stdout.write('ready\\n');
setInterval(() => undefined, 1000);
process.on('SIGTERM', () => { stopping = true; process.stdout.write(JSON.stringify({ open, closedByServer }) + '\\n'); process.exit(0); });
`;

async function runOnce(idle: number, dir: string): Promise<Record<string, unknown>> {
  const project = parseProject({
    name: `idle${idle}`,
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1 },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'client', name: 'site-2', org: 'b' },
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
    ],
  });
  const k = (await provision(project, { outDir: join(dir, 'kits') })).kits;
  const server = new FederationServer({ kit: loadKit(k.server!, 'server'), workspace: join(dir, 'server'), host: '127.0.0.1', port: 0 });
  const port = await server.start();
  const sites = ['site-1', 'site-2'].map(
    (name) => new FederationSite({ kit: loadKit(k[name]!, 'client'), workspace: join(dir, name), host: '127.0.0.1', port }),
  );
  const running = sites.map((s) => s.run());
  const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
  let flood: ChildProcess | null = null;
  try {
    while (server.siteList().length < 2) await new Promise((r) => setTimeout(r, 50));
    flood = spawn(process.execPath, ['-e', FLOOD, String(idle), String(port), String(server.dataPort)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    flood.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    process.stderr.write(`idle ${idle}: sites connected, flood starting\n`);
    while (!out.includes('ready')) await new Promise((r) => setTimeout(r, 50));
    process.stderr.write(`idle ${idle}: flood ready, job submitted\n`);
    const t0 = Date.now();
    const id = await admin.submit(tinyJob(join(dir, 'job'), { minClients: 2, rounds, sleepMs }));
    for (;;) {
      const s = server.store.get(id)!;
      if (s.state === 'FINISHED' || s.state === 'FAILED') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const wall = (Date.now() - t0) / 1000;
    const rec = server.store.get(id)!;
    const exited = new Promise((r) => flood!.once('exit', r));
    flood.kill('SIGTERM');
    await exited;
    const floodReport = JSON.parse(out.split('\n').find((l) => l.startsWith('{')) ?? '{}') as { open?: number; closedByServer?: number };
    const summary = rec.result as { rounds: RoundSummary[] } | null;
    const secs = (summary?.rounds ?? []).map((r) => +r.seconds.toFixed(3));
    return {
      idleConnections: idle,
      job: rec.state,
      roundSeconds: secs,
      meanRoundSeconds: secs.length ? +(secs.reduce((a, b) => a + b, 0) / secs.length).toFixed(3) : null,
      jobWallSeconds: +wall.toFixed(2),
      idleOpenAtEnd: floodReport.open ?? null,
      closedByServer: floodReport.closedByServer ?? null,
    };
  } finally {
    if (flood && flood.exitCode === null) flood.kill('SIGKILL');
    admin.close();
    for (const s of sites) s.stop();
    await Promise.all(running);
    await server.stop();
  }
}

const base = mkdtempSync(join(tmpdir(), 'flotilla-bench-idle-'));
try {
  const runs = [];
  for (const n of idleCounts) runs.push(await runOnce(n, join(base, String(n))));
  const result = { bench: 'idle-connections', rounds, trainerSleepMs: sleepMs, handshakeTimeoutMs: 10_000, runs, ...commitFacts() };
  const text = JSON.stringify(result);
  if (outFile) writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${text}\n`);
} finally {
  rmSync(base, { recursive: true, force: true });
}
