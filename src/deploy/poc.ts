/**
 * POC mode: a whole federation on this machine. `prepare` writes a
 * project.yml (server on localhost, site-1…site-N, one project admin) and
 * provisions it; `start` launches the server and the clients as detached
 * processes (logs in <ws>/logs, pids in <ws>/pids.json); `stop` ends them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { z } from 'zod';
import { loadKit } from '../provision/kit.ts';
import { provision } from '../provision/provision.ts';
import { parseProject } from '../provision/project.ts';
import { ProcessIdentity, identify, isSameProcess } from '../util/process-identity.ts';

export const POC_ADMIN = 'admin@poc.example';

export interface PocLayout {
  workspace: string;
  server: string;
  clients: string[];
  admin: string;
}

function layoutFile(ws: string): string {
  return join(ws, 'poc.json');
}

/** What `poc prepare --force` does with the job store of the POC it replaces. */
export type JobStoreChoice = 'keep' | 'discard';

export interface PocPrepareOptions {
  clients: number;
  workspace: string;
  port: number;
  /** re-provision a POC folder of our own; `jobs` says whether its job store survives */
  force?: { jobs: JobStoreChoice };
  /** sites' privacy policies by site name (validated with project.yml: participants.<i>.privacy...) */
  privacy?: Record<string, unknown>;
  /** provision CKKS keys for jobs with the he filter (project.yml homomorphicEncryption) */
  he?: boolean;
}

/** `poc prepare --privacy <file>`: site name → privacy policy (each checked when the project is provisioned). */
export function readPrivacyFile(path: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: not readable YAML or JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new Error(`${path}: must map site names to privacy policies ({site-1: {filters: [...]}})`);
  return raw as Record<string, unknown>;
}

export async function pocPrepare(opts: PocPrepareOptions): Promise<PocLayout> {
  const ws = resolve(opts.workspace);
  if (existsSync(join(ws, 'pids.json'))) throw new Error(`a POC is running in ${ws}: run "flotilla poc stop -w ${opts.workspace}" first`);
  const entries = existsSync(ws) ? readdirSync(ws) : [];
  const ours = existsSync(layoutFile(ws));
  if (entries.length > 0 && !ours)
    throw new Error(
      `${ws} is not empty and holds no POC (no poc.json): refusing to provision into it; choose an empty or new folder with -w`,
    );
  if (ours && !opts.force)
    throw new Error(
      `${ws} already holds a POC: re-provision it with --force --keep-jobs (its job store and results survive) or --force --discard-jobs (deleted), or choose another folder with -w`,
    );
  // the old server workspace (jobs.sqlite, jobs/) moves aside while the POC is re-provisioned
  const kept = join(ws, '.kept-server-workspace');
  if (ours && opts.force?.jobs === 'keep') {
    const old = JSON.parse(readFileSync(layoutFile(ws), 'utf8')) as PocLayout;
    const oldWs = join(old.server, 'workspace');
    if (existsSync(oldWs)) renameSync(oldWs, kept);
  }
  for (const e of entries) if (e !== '.kept-server-workspace') rmSync(join(ws, e), { recursive: true, force: true });
  const unknown = Object.keys(opts.privacy ?? {}).filter(
    (s) => !/^site-\d+$/.test(s) || Number(s.slice(5)) > opts.clients || s === 'site-0',
  );
  if (unknown.length) throw new Error(`privacy policies for ${unknown.join(', ')}: this POC has sites site-1 … site-${opts.clients}`);
  mkdirSync(ws, { recursive: true });
  const project = {
    name: 'poc',
    ...(opts.he && { homomorphicEncryption: true }),
    participants: [
      // POC stays on this machine: it listens on loopback only
      { type: 'server', name: 'server', org: 'poc', host: 'localhost', bind: '127.0.0.1', port: opts.port },
      ...Array.from({ length: opts.clients }, (_, i) => {
        const privacy = opts.privacy?.[`site-${i + 1}`];
        return { type: 'client', name: `site-${i + 1}`, org: 'poc', ...(privacy !== undefined && { privacy }) };
      }),
      { type: 'admin', name: POC_ADMIN, org: 'poc', role: 'project_admin' },
    ],
  };
  writeFileSync(join(ws, 'project.yml'), stringify(project));
  const r = await provision(parseProject(project, join(ws, 'project.yml')), { outDir: ws });
  const layout: PocLayout = {
    workspace: ws,
    server: r.kits.server!,
    clients: Array.from({ length: opts.clients }, (_, i) => r.kits[`site-${i + 1}`]!),
    admin: r.kits[POC_ADMIN]!,
  };
  if (existsSync(kept)) renameSync(kept, join(layout.server, 'workspace'));
  writeFileSync(layoutFile(ws), `${JSON.stringify(layout, null, 2)}\n`);
  return layout;
}

const PidsFile = z.record(z.string(), ProcessIdentity);

/** argv that re-runs this CLI (works under `node --import tsx src/cli/main.ts` and bin/flotilla.js). */
export function selfCommand(): string[] {
  return [...process.execArgv, process.argv[1]!];
}

/** How long `poc start` waits for the server to listen before it reports the server's own error. */
const SERVER_UP_TIMEOUT_MS = 60_000;

/** What `poc start` asks of the server beyond its kit: the dashboard's and /metrics' ports (docs/dashboard.md), the log level. */
export interface PocServerOptions {
  dashboardPort?: number;
  metricsPort?: number;
  /** the server's `--mlflow`: every job's tracked rows go to this MLflow tracking server (docs/tracking.md) */
  mlflow?: string;
  /** `--log-level` of the server and every site */
  logLevel?: string;
}

/**
 * Starts the POC's server, waits until it listens (or reports why it died, from its log), then
 * the sites; a server that does not come up leaves nothing running and no pids.json.
 */
export async function pocStart(workspace: string, server: PocServerOptions = {}): Promise<{ pids: Record<string, ProcessIdentity> }> {
  const ws = resolve(workspace);
  if (!existsSync(layoutFile(ws))) throw new Error(`${ws} holds no prepared POC: run "flotilla poc prepare" first`);
  if (existsSync(join(ws, 'pids.json'))) throw new Error(`the POC in ${ws} is already started: run "flotilla poc stop" first`);
  const layout = JSON.parse(readFileSync(layoutFile(ws), 'utf8')) as PocLayout;
  mkdirSync(join(ws, 'logs'), { recursive: true });
  const pids: Record<string, ProcessIdentity> = {};
  const launch = (name: string, args: string[]): ChildProcess => {
    const out = openSync(join(ws, 'logs', `${name}.log`), 'a');
    const argv = [...selfCommand(), ...args];
    const child = spawn(process.execPath, argv, { detached: true, stdio: ['ignore', out, out] });
    child.unref();
    const pid = child.pid!;
    // the kernel's start time names this process; the command line is what we asked to run
    pids[name] = { pid, startTime: identify(pid)?.startTime ?? '0', cmdline: [process.execPath, ...argv].join(' ') };
    return child;
  };
  const { listen } = loadKit(layout.server, 'server').config as { listen: { host: string; port: number } };
  // a port another program holds would answer the health check below: refuse it up front, by name
  for (const port of [listen.port, listen.port + 1]) {
    const taken = await portTaken(listen.host, port);
    if (taken)
      throw new Error(
        `port ${port} on ${listen.host} is in use (${taken}): stop what holds it, or prepare the POC on other ports (flotilla poc prepare -p <port> --force)`,
      );
  }
  const level = server.logLevel !== undefined ? ['--log-level', server.logLevel] : [];
  const logFile = join(ws, 'logs', 'server.log');
  const logStart = existsSync(logFile) ? readFileSync(logFile).length : 0;
  const serverProcess = launch('server', [
    'server',
    'start',
    layout.server,
    ...(server.dashboardPort !== undefined ? ['--dashboard-port', String(server.dashboardPort)] : []),
    ...(server.metricsPort !== undefined ? ['--metrics-port', String(server.metricsPort)] : []),
    ...(server.mlflow !== undefined ? ['--mlflow', server.mlflow] : []),
    ...level,
  ]);
  // the dashboard and /metrics listen after the gRPC port: started only once they answer too (a
  // `dashboard-token` right after `poc start` would otherwise be told the server serves no dashboard)
  let up = await serverUp(serverProcess, listen.port, SERVER_UP_TIMEOUT_MS);
  for (const port of [server.dashboardPort, server.metricsPort])
    if (up === null && port !== undefined) up = await serverUp(serverProcess, port, SERVER_UP_TIMEOUT_MS);
  if (up !== null) {
    if (serverProcess.exitCode === null) serverProcess.kill('SIGKILL');
    const tail = readFileSync(logFile).subarray(logStart).toString('utf8').trim().split('\n').slice(-5).join('\n');
    throw new Error(`the POC server did not start (${up}); its log (${logFile}):\n${tail || '(empty)'}`);
  }
  layout.clients.forEach((c, i) => launch(`site-${i + 1}`, ['client', 'start', c, ...level]));
  writeFileSync(join(ws, 'pids.json'), `${JSON.stringify(pids, null, 2)}\n`);
  return { pids };
}

/** Why `port` cannot be listened on (EADDRINUSE, EACCES), or null when it is free. */
function portTaken(host: string, port: number): Promise<string | null> {
  return new Promise((res) => {
    const probe = createServer();
    probe.once('error', (e: NodeJS.ErrnoException) => res(e.code ?? e.message));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => res(null)));
  });
}

/** null once `port` accepts connections on loopback; otherwise why not (the process exited, or the time ran out). */
async function serverUp(child: ChildProcess, port: number, timeoutMs: number): Promise<string | null> {
  let exited: string | null = null;
  child.once('exit', (code, signal) => (exited = signal ? `it was killed by ${signal}` : `it exited with code ${code}`));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited !== null) return exited;
    const open = await new Promise<boolean>((res) => {
      const sock = connect({ host: '127.0.0.1', port });
      sock.once('connect', () => {
        sock.destroy();
        res(true);
      });
      sock.once('error', () => res(false));
    });
    // the port answers, and it is our server's (not another program's that held it first)
    if (open && exited === null && (await new Promise((r) => setTimeout(r, 300, true))) && exited === null) return null;
    await new Promise((r) => setTimeout(r, 200));
  }
  return exited ?? `port ${port} did not open within ${timeoutMs / 1000} s`;
}

export interface PocStopReport {
  stopped: string[];
  /** processes left alone: the PID is gone or now names another process */
  skipped: { name: string; pid: number; why: string }[];
}

/** Signals each process `poc start` launched, after checking the PID still names that process. */
/** The processes `poc start` recorded, validated (a hand-edited or older file is refused, saying what to do). */
function readPids(workspace: string): { file: string; pids: z.infer<typeof PidsFile> } {
  const ws = resolve(workspace);
  const file = join(ws, 'pids.json');
  if (!existsSync(file)) throw new Error(`no POC is running in ${ws} (no pids.json)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file} is not valid JSON (${(e as Error).message}): stop the POC processes by hand, then delete ${file}`);
  }
  const parsed = PidsFile.safeParse(raw);
  if (!parsed.success)
    throw new Error(
      `${file} does not record process identities (start time, command line): an older POC or a hand edit; stop its processes by hand (see logs/), then delete ${file}`,
    );
  return { file, pids: parsed.data };
}

/** Each POC process: running (the PID still names the process `poc start` launched) or why not. */
export function pocStatus(workspace: string): { name: string; pid: number; running: boolean; why: string | null }[] {
  const { pids } = readPids(workspace);
  return Object.entries(pids).map(([name, id]) => {
    const v = isSameProcess(id);
    return { name, pid: id.pid, running: v.same, why: v.same ? null : v.why };
  });
}

export function pocStop(workspace: string): PocStopReport {
  const { file, pids } = readPids(workspace);
  const report: PocStopReport = { stopped: [], skipped: [] };
  for (const [name, id] of Object.entries(pids)) {
    const v = isSameProcess(id);
    if (!v.same) {
      report.skipped.push({ name, pid: id.pid, why: v.why });
      continue;
    }
    try {
      process.kill(id.pid, 'SIGTERM');
      report.stopped.push(name);
    } catch (e) {
      report.skipped.push({ name, pid: id.pid, why: (e as Error).message });
    }
  }
  rmSync(file);
  return report;
}
