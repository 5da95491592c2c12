/**
 * Helpers of the fault-injection tests: a provisioned federation on loopback whose sites are real
 * `flotilla client start` processes (so a test can kill -9 one), and the job log read back as events.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AdminClient } from '../../src/admin/admin-client.ts';
import type { AdminReply } from '../../src/deploy/admin-commands.ts';
import { parseProject } from '../../src/provision/project.ts';
import { provision } from '../../src/provision/provision.ts';
import { freePortPair, repo } from './federation.ts';

/** Kits of a project with a server on 127.0.0.1 (a free port pair: gRPC and the data plane), `n` sites and an admin. */
export async function federationKits(
  outDir: string,
  name: string,
  n: number,
  opts: { he?: boolean } = {},
): Promise<Record<string, string>> {
  const port = await freePortPair();
  const project = parseProject({
    name,
    ...(opts.he && { homomorphicEncryption: true }),
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', bind: '127.0.0.1', port },
      ...Array.from({ length: n }, (_, i) => ({ type: 'client' as const, name: `site-${i + 1}`, org: `org-${i + 1}` })),
      { type: 'admin' as const, name: 'boss@hub.org', org: 'hub', role: 'project_admin' as const },
    ],
  });
  return (await provision(project, { outDir })).kits;
}

/** `flotilla <args>` from this checkout as a child process, its stdout and stderr appended to `out`. */
function spawnCli(args: string[], out: string[]): ChildProcess {
  const p = spawn(process.execPath, ['--conditions=flotilla-source', '--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  p.stdout.on('data', (b: Buffer) => out.push(b.toString()));
  p.stderr.on('data', (b: Buffer) => out.push(b.toString()));
  return p;
}

const running = (p: ChildProcess): boolean => p.exitCode === null && p.signalCode === null;

async function signal(p: ChildProcess, sig: NodeJS.Signals): Promise<void> {
  if (!running(p)) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill(sig);
  await gone;
}

/**
 * The server daemon as a child process (`flotilla server start <kit> -w <workspace>`) that a test can
 * kill -9 and start again on the same workspace; `out` collects the output of every start.
 */
export class ServerProcess {
  readonly out: string[] = [];
  private readonly procs: ChildProcess[] = [];

  constructor(
    private readonly kit: string,
    private readonly workspace: string,
    /** more options of `server start` (`--mlflow <uri>`), on every start */
    private readonly args: string[] = [],
  ) {}

  start(): void {
    this.procs.push(spawnCli(['server', 'start', this.kit, '-w', this.workspace, ...this.args], this.out));
  }

  /** kill -9 of the running server, as a crash. */
  kill(): Promise<void> {
    return signal(this.procs.at(-1)!, 'SIGKILL');
  }

  /** SIGTERM, waiting for the exit. */
  stop(): Promise<void> {
    return signal(this.procs.at(-1)!, 'SIGTERM');
  }

  /** For an `after` hook: whatever still runs is killed (a test that timed out never reached its stop). */
  killAll(): void {
    for (const p of this.procs) if (running(p)) p.kill('SIGKILL');
  }
}

/** Site daemons as child processes (`flotilla client start <kit>`), killed at the end of a test. */
export class SiteProcesses {
  private readonly procs = new Map<string, ChildProcess>();
  readonly output = new Map<string, string[]>();

  constructor(private readonly kits: Record<string, string>) {}

  /** `args`: more options of `client start` (`--port`, `--data-port`: through a proxy). */
  start(site: string, workspace: string, args: string[] = []): ChildProcess {
    const out: string[] = [];
    this.output.set(site, out);
    const p = spawnCli(['client', 'start', this.kits[site]!, '-w', workspace, ...args], out);
    this.procs.set(site, p);
    return p;
  }

  /** kill -9: the process dies without a word to the server (its sockets are closed by the kernel). */
  async kill(site: string): Promise<void> {
    const p = this.procs.get(site);
    if (p) await signal(p, 'SIGKILL');
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.procs.keys()].map((s) => this.kill(s)));
  }
}

export interface LogEvent {
  time: number;
  msg: string;
  [k: string]: unknown;
}

/** The events of a job's server log (<workspace>/jobs/<id>/workspace/server/log.jsonl). */
export function jobEvents(serverWorkspace: string, jobId: string): LogEvent[] {
  const file = join(serverWorkspace, 'jobs', jobId, 'workspace', 'server', 'log.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as LogEvent);
}

/** For a failed test: the server's output, the job's server log and every site's output, to stderr. */
export function dumpFederation(server: ServerProcess, sites: SiteProcesses, serverWorkspace: string, jobId: string): void {
  console.error(server.out.join(''), ...jobEvents(serverWorkspace, jobId).map((l) => JSON.stringify(l) + '\n'));
  for (const [s, o] of sites.output) console.error(`${s}:`, o.join(''));
}

/** A job's status once it is neither queued nor running (or when `timeoutMs` is up), asked every 100 ms. */
export async function jobEndStatus(admin: AdminClient, job: string, timeoutMs: number): Promise<AdminReply<'status'>> {
  let st = await admin.call('status', { job });
  for (const deadline = Date.now() + timeoutMs; ['SUBMITTED', 'RUNNING'].includes(st.state) && Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, 100));
    st = await admin.call('status', { job });
  }
  return st;
}
