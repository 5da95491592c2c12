/**
 * Helpers of the fault-injection tests: a provisioned federation on loopback whose sites are real
 * `flotilla client start` processes (so a test can kill -9 one), and the job log read back as events.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
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

/** Site daemons as child processes (`flotilla client start <kit>`), killed at the end of a test. */
export class SiteProcesses {
  private readonly procs = new Map<string, ChildProcess>();
  readonly output = new Map<string, string[]>();

  constructor(private readonly kits: Record<string, string>) {}

  start(site: string, workspace: string): ChildProcess {
    const p = spawn(
      process.execPath,
      [
        '--conditions=flotilla-source',
        '--import',
        'tsx',
        join(repo, 'src/cli/main.ts'),
        'client',
        'start',
        this.kits[site]!,
        '-w',
        workspace,
      ],
      { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const out: string[] = [];
    this.output.set(site, out);
    p.stdout.on('data', (b: Buffer) => out.push(b.toString()));
    p.stderr.on('data', (b: Buffer) => out.push(b.toString()));
    this.procs.set(site, p);
    return p;
  }

  /** kill -9: the process dies without a word to the server (its sockets are closed by the kernel). */
  async kill(site: string): Promise<void> {
    const p = this.procs.get(site);
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
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
