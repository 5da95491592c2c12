/** Small helpers for tests that run a FederationServer and its sites in the test process. */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { parseProject } from '../../src/provision/project.ts';
import { provision } from '../../src/provision/provision.ts';
import type { Logger } from '../../src/util/log.ts';

export const repo = fileURLToPath(new URL('../..', import.meta.url));

/** A logger whose JSON lines the test can read. */
export function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: pino<never>({ level: 'info' }, { write: (s: string) => void lines.push(s) }), lines };
}

export async function until(what: string, ok: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A copy of test/fixtures/jobs/tiny at `dest` with its imports pointed at Flotilla's sources (as shipped
 * jobs are), `minClients`/`rounds` changed and, with sleepMs, a trainer that takes that long per round
 * (a list: per site index, so one site can be slower); floats: the size of its one tensor (4); crossSite:
 * cross-site evaluation after FedAvg, each evaluation taking `evalSleepMs`.
 */
export function tinyJob(
  dest: string,
  o: { minClients?: number; rounds?: number; sleepMs?: number | number[]; floats?: number; crossSite?: { evalSleepMs: number } } = {},
): string {
  cpSync(join(repo, 'test/fixtures/jobs/tiny'), dest, { recursive: true });
  let yaml = readFileSync(join(dest, 'job.yaml'), 'utf8')
    .replace('minClients: 2', `minClients: ${o.minClients ?? 2}`)
    .replace('rounds: 3', `rounds: ${o.rounds ?? 3}`);
  if (o.crossSite)
    yaml = yaml
      .replace(/( {4}rounds: \d+\n)/, '$1  - type: cross_site_eval\n')
      .replace('      rate: 0.5\n', `      rate: 0.5\n      evalSleepMs: ${o.crossSite.evalSleepMs}\n`);
  writeFileSync(join(dest, 'job.yaml'), yaml);
  let trainer = readFileSync(join(dest, 'trainer.ts'), 'utf8').replaceAll('../../../../src/', `${repo}src/`);
  // a model of `floats` float32 values instead of 4 (the trainer works on any length)
  if (o.floats) trainer = trainer.replace('f32([4], [0, 0, 0, 0])', `f32([${o.floats}], new Float32Array(${o.floats}))`);
  if (typeof o.sleepMs === 'number')
    trainer = trainer.replace('const w = m.params', `await new Promise((r) => setTimeout(r, ${o.sleepMs}));\n      const w = m.params`);
  else if (o.sleepMs)
    trainer = trainer.replace(
      'const w = m.params',
      `await new Promise((r) => setTimeout(r, ${JSON.stringify(o.sleepMs)}[ctx.siteIndex] ?? 0));\n      const w = m.params`,
    );
  writeFileSync(join(dest, 'trainer.ts'), trainer);
  return dest;
}

function bindable(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(null));
    s.listen(port, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

/** A port nothing listens on (free when this returns). */
export async function freePort(): Promise<number> {
  return (await bindable(0))!;
}

/** Startup kits of a project of one server, one site (site-1) and a project admin (boss@hub.org). */
export async function oneSiteKits(outDir: string, name: string): Promise<Record<string, string>> {
  const project = parseProject({
    name,
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1 },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
    ],
  });
  return (await provision(project, { outDir })).kits;
}

/** A free port P whose P + 1 is free too: a provisioned server listens on both (gRPC and the data plane). */
export async function freePortPair(): Promise<number> {
  for (;;) {
    const p = await bindable(0);
    if (p !== null && p < 65535 && (await bindable(p + 1)) !== null) return p;
  }
}
