/**
 * POC mode: a whole federation on this machine. `prepare` writes a
 * project.yml (server on localhost, site-1…site-N, one project admin) and
 * provisions it; `start` launches the server and the clients as detached
 * processes (logs in <ws>/logs, pids in <ws>/pids.json); `stop` ends them.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { provision } from '../provision/provision.ts';
import { parseProject } from '../provision/project.ts';

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

export async function pocPrepare(opts: { clients: number; workspace: string; port: number }): Promise<PocLayout> {
  const ws = resolve(opts.workspace);
  if (existsSync(join(ws, 'pids.json'))) throw new Error(`a POC is running in ${ws}: run "flotilla poc stop" first`);
  rmSync(ws, { recursive: true, force: true });
  mkdirSync(ws, { recursive: true });
  const project = {
    name: 'poc',
    participants: [
      { type: 'server', name: 'server', org: 'poc', host: 'localhost', port: opts.port },
      ...Array.from({ length: opts.clients }, (_, i) => ({ type: 'client', name: `site-${i + 1}`, org: 'poc' })),
      { type: 'admin', name: POC_ADMIN, org: 'poc', role: 'project_admin' },
    ],
  };
  writeFileSync(join(ws, 'project.yml'), stringify(project));
  const r = await provision(parseProject(project, join(ws, 'project.yml')), { outDir: ws });
  const layout: PocLayout = { workspace: ws, server: r.kits.server!, clients: Array.from({ length: opts.clients }, (_, i) => r.kits[`site-${i + 1}`]!), admin: r.kits[POC_ADMIN]! };
  writeFileSync(layoutFile(ws), `${JSON.stringify(layout, null, 2)}\n`);
  return layout;
}

/** argv that re-runs this CLI (works under `node --import tsx src/cli/main.ts` and bin/flotilla.js). */
export function selfCommand(): string[] {
  return [...process.execArgv, process.argv[1]!];
}

export function pocStart(workspace: string): { pids: Record<string, number> } {
  const ws = resolve(workspace);
  if (!existsSync(layoutFile(ws))) throw new Error(`${ws} holds no prepared POC: run "flotilla poc prepare" first`);
  if (existsSync(join(ws, 'pids.json'))) throw new Error(`the POC in ${ws} is already started: run "flotilla poc stop" first`);
  const layout = JSON.parse(readFileSync(layoutFile(ws), 'utf8')) as PocLayout;
  mkdirSync(join(ws, 'logs'), { recursive: true });
  const pids: Record<string, number> = {};
  const launch = (name: string, args: string[]): void => {
    const out = openSync(join(ws, 'logs', `${name}.log`), 'a');
    const child = spawn(process.execPath, [...selfCommand(), ...args], { detached: true, stdio: ['ignore', out, out] });
    child.unref();
    pids[name] = child.pid!;
  };
  launch('server', ['server', 'start', layout.server]);
  layout.clients.forEach((c, i) => launch(`site-${i + 1}`, ['client', 'start', c]));
  writeFileSync(join(ws, 'pids.json'), `${JSON.stringify(pids, null, 2)}\n`);
  return { pids };
}

export function pocStop(workspace: string): string[] {
  const ws = resolve(workspace);
  const file = join(ws, 'pids.json');
  if (!existsSync(file)) throw new Error(`no POC is running in ${ws} (no pids.json)`);
  const pids = JSON.parse(readFileSync(file, 'utf8')) as Record<string, number>;
  const stopped: string[] = [];
  for (const [name, pid] of Object.entries(pids)) {
    try {
      process.kill(pid, 'SIGTERM');
      stopped.push(name);
    } catch {
      /* already gone */
    }
  }
  rmSync(file);
  return stopped;
}
