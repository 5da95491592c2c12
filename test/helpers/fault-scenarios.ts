/**
 * The fault-injection scenarios, shared by the CI tests (test/e2e/deploy/fault-*.test.ts, short
 * settings) and scripts/faults.ts (the longer suite): each runs a real deployment on loopback (mutual
 * TLS, `flotilla client start` site processes), injects its fault, and returns what happened and the
 * figures; the callers assert on them. On an error the processes' output and the job log go to stderr.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AdminClient } from '../../src/admin/admin-client.ts';
import { readSafetensors } from '../../src/core/safetensors.ts';
import { FederationServer } from '../../src/deploy/server.ts';
import { loadKit } from '../../src/provision/kit.ts';
import { simulate } from '../../src/simulator/simulator.ts';
import { type LogEvent, SiteProcesses, federationKits, jobEvents } from './fault.ts';
import { FaultProxy } from './fault-proxy.ts';
import { capture, until } from './federation.ts';

export const ENDED = ['FINISHED', 'FAILED', 'ABORTED'];

/** Every scenario's common figures (the fault suite's table columns). */
export interface FaultRun {
  fault: string;
  /** what was injected, counted (kills, restarts, cuts, delayed chunks, corrupted chunks, slow tasks) */
  injected: number;
  state: string;
  rounds: number;
  /** rounds missing from the job, or (link faults, slow site) rounds without the faulted site's result */
  roundsLost: number;
  /** bytes of the final model that differ from an uninterrupted run's (null: no such comparison) */
  corruptedBytesAccepted: number | null;
  roundSecondsMedian: number | null;
}

export const median = (xs: number[]): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

/** Seconds between consecutive 'round done' events. */
export const roundSeconds = (rounds: LogEvent[]): number[] => rounds.slice(1).map((e, i) => (e.time - rounds[i]!.time) / 1000);

/** How many bytes of model `a` differ from model `b` (a tensor missing or of another size counts whole). */
export async function modelDiffBytes(a: string, b: string): Promise<number> {
  const [x, y] = [(await readSafetensors(a)).tensors, (await readSafetensors(b)).tensors];
  let diff = 0;
  for (const name of new Set([...x.keys(), ...y.keys()])) {
    const [p, q] = [x.get(name)?.data, y.get(name)?.data];
    const [u, v] = [
      p ? new Uint8Array(p.buffer, p.byteOffset, p.byteLength) : null,
      q ? new Uint8Array(q.buffer, q.byteOffset, q.byteLength) : null,
    ];
    if (!u || !v || u.byteLength !== v.byteLength) {
      diff += Math.max(u?.byteLength ?? 0, v?.byteLength ?? 0);
      continue;
    }
    for (let i = 0; i < u.byteLength; i++) if (u[i] !== v[i]) diff++;
  }
  return diff;
}

/** The job's final model against the same job simulated without faults (every site in every round). */
export async function againstUninterrupted(o: {
  job: string;
  sites: number;
  final: string;
  dir: string;
  offload?: boolean;
}): Promise<number> {
  const sim = join(o.dir, 'uninterrupted');
  await simulate({ jobDir: o.job, clients: o.sites, threads: 0, workspace: sim, tracking: false, ...(o.offload && { offload: true }) });
  return modelDiffBytes(o.final, join(sim, 'server', 'global_model.safetensors'));
}

/**
 * An in-process FederationServer and `n` site processes (site-1 … site-n); `proxied` sites reach
 * both server ports (gRPC and the data plane) through their own FaultProxy each.
 */
export async function federation(dir: string, n: number, proxied: string[] = []) {
  mkdirSync(dir, { recursive: true });
  const k = await federationKits(join(dir, 'kits'), 'faults', n);
  const kit = loadKit(k.server!, 'server');
  const workspace = join(dir, 'server-ws');
  const serverLog = capture();
  const server = new FederationServer({ kit, workspace, log: serverLog.log });
  await server.start();
  const proxies = new Map<string, { grpc: FaultProxy; data: FaultProxy | null }>();
  const sites = new SiteProcesses(k);
  const names = Array.from({ length: n }, (_, i) => `site-${i + 1}`);
  for (const s of names) {
    if (!proxied.includes(s)) {
      sites.start(s, join(dir, s));
      continue;
    }
    const grpc = new FaultProxy();
    await grpc.start(kit.config.listen.port);
    const data = server.dataPort !== null ? new FaultProxy() : null;
    await data?.start(server.dataPort!);
    proxies.set(s, { grpc, data });
    sites.start(s, join(dir, s), ['--port', String(grpc.port), '--data-port', data ? String(data.port) : 'none']);
  }
  const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port: kit.config.listen.port });
  let id = '';
  return {
    kits: k,
    server,
    workspace,
    sites,
    names,
    proxies,
    admin,
    rounds: (): LogEvent[] => jobEvents(workspace, id).filter((e) => e.msg === 'round done'),
    events: (): LogEvent[] => jobEvents(workspace, id),
    finalModel: (): string => join(workspace, 'jobs', id, 'workspace', 'server', 'global_model.safetensors'),
    async connected(ms = 60_000): Promise<void> {
      await until(`${n} sites to connect`, () => server.siteList().length === n, ms);
    },
    async submit(job: string): Promise<string> {
      id = await admin.submit(job);
      return id;
    },
    async ended(ms: number): Promise<string> {
      await until('the job to end', () => ENDED.includes(server.store.get(id)?.state ?? ''), ms);
      return server.store.get(id)!.state;
    },
    dump(): void {
      console.error([...serverLog.lines, ...jobEvents(workspace, id).map((l) => JSON.stringify(l) + '\n')].join(''));
      for (const [s, out] of sites.output) console.error(`${s}:`, out.join(''));
    },
    async close(): Promise<void> {
      admin.close();
      await sites.stopAll();
      await server.stop();
      for (const p of proxies.values()) await Promise.all([p.grpc.close(), p.data?.close()]);
    },
  };
}

export type Federation = Awaited<ReturnType<typeof federation>>;

/** Runs `body` on a fresh federation, dumping the logs if it throws, closing it in any case. */
export async function withFederation<T>(dir: string, n: number, proxied: string[], body: (f: Federation) => Promise<T>): Promise<T> {
  const f = await federation(dir, n, proxied);
  try {
    return await body(f);
  } catch (e) {
    f.dump();
    throw e;
  } finally {
    await f.close();
  }
}
