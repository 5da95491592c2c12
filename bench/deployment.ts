/**
 * Deployment overhead: the same FedAvg job (a pure-JS trainer, model of
 * --floats float32 values) run by the simulator and by a real gRPC + mutual
 * TLS deployment on loopback (server and clients in this process, each client
 * with its own TLS connection), and 50 clients connected to one server.
 * Prints one JSON object.
 *
 *   node --conditions=flotilla-source --import tsx bench/deployment.ts [--floats 262144] [--rounds 5] [--many 50]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient } from '../src/admin/admin-client.ts';
import { FederationSite } from '../src/deploy/site.ts';
import { FederationServer } from '../src/deploy/server.ts';
import { loadKit } from '../src/provision/kit.ts';
import { parseProject } from '../src/provision/project.ts';
import { provision } from '../src/provision/provision.ts';
import { simulate } from '../src/simulator/simulator.ts';
import type { RoundSummary } from '../src/workflows/workflow.ts';
import { commitFacts } from './commit.ts';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);

const arg = (name: string, d: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : d;
};
const floats = arg('floats', 262_144);
const rounds = arg('rounds', 5);
const many = arg('many', 50);
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-bench-'));

function writeJob(dir: string, minClients: number): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n'); // job code is ES modules
  writeFileSync(
    join(dir, 'job.yaml'),
    `name: bench\nminClients: ${minClients}\nmodel:\n  module: trainer.ts\n  export: initialModel\nworkflows:\n  - type: fedavg\n    rounds: ${rounds}\nexecutor:\n  trainer:\n    module: trainer.ts\n    factory: createTrainer\n`,
  );
  writeFileSync(
    join(dir, 'trainer.ts'),
    `import { f32 } from 'flotilla/core';
export function createTrainer(ctx) {
  const target = ctx.siteIndex + 1;
  return async (flare) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const w = m.params.get('w').data;
      const out = w.map((x) => x + 0.5 * (target - x));
      await flare.send({ params: new Map([['w', f32([w.length], out)]]), paramsType: 'FULL', metrics: {}, meta: { numSamples: 10 }, currentRound: m.currentRound, totalRounds: m.totalRounds });
    }
  };
}
export function initialModel() { return new Map([['w', f32([${floats}], new Float32Array(${floats}))]]); }
`,
  );
  return dir;
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
// round 0 includes trainer start-up in both modes; compare steady-state rounds
const steady = (rs: RoundSummary[]): number => mean(rs.slice(1).map((r) => r.seconds));

async function main(): Promise<void> {
  const job2 = writeJob(join(tmp, 'job2'), 2);
  const sim = await simulate({ jobDir: job2, clients: 2, threads: 0, workspace: join(tmp, 'sim') });

  const participants = [
    { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 0 + 1 },
    ...Array.from({ length: Math.max(many, 2) }, (_, i) => ({ type: 'client', name: `site-${i + 1}`, org: 'o' })),
    { type: 'admin', name: 'bench@hub.org', org: 'hub', role: 'project_admin' },
  ];
  const t0 = Date.now();
  const { kits } = await provision(parseProject({ name: 'bench', participants }), { outDir: tmp });
  const provisionSeconds = (Date.now() - t0) / 1000;
  const server = new FederationServer({
    kit: loadKit(kits.server!, 'server'),
    workspace: join(tmp, 'server-ws'),
    host: '127.0.0.1',
    port: 0,
  });
  const port = await server.start();
  const admin = new AdminClient(kits['bench@hub.org']!, { host: '127.0.0.1', port });
  const clients: FederationSite[] = [];
  const runs: Promise<string>[] = [];
  const connect = async (n: number): Promise<number> => {
    const t = Date.now();
    for (let i = clients.length; i < n; i++) {
      const c = new FederationSite({
        kit: loadKit(kits[`site-${i + 1}`]!, 'client'),
        workspace: join(tmp, `site-${i + 1}`),
        host: '127.0.0.1',
        port,
      });
      clients.push(c);
      runs.push(c.run());
    }
    while (server.siteList().length < n) await new Promise((r) => setTimeout(r, 20));
    return (Date.now() - t) / 1000;
  };
  const runJob = async (dir: string): Promise<{ rounds: RoundSummary[]; seconds: number }> => {
    const id = await admin.submit(dir);
    for (;;) {
      const s = await admin.call('status', { job: id });
      if (s.state === 'FINISHED') return s.result!;
      if (s.state !== 'SUBMITTED' && s.state !== 'RUNNING') throw new Error(`job ${id} ${s.state}: ${s.detail}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  await connect(2);
  const grpc2 = await runJob(job2);

  const connectSeconds = await connect(many);
  const rssAfterConnect = process.memoryUsage().rss;
  const jobMany = writeJob(join(tmp, 'jobMany'), many);
  const grpcMany = await runJob(jobMany);

  const result = {
    bench: 'deployment',
    ...commitFacts(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version },
    model: { floats, mb: (floats * 4) / 2 ** 20 },
    rounds,
    twoClients: {
      simulatorRoundSeconds: +steady(sim.rounds).toFixed(4),
      grpcRoundSeconds: +steady(grpc2.rounds).toFixed(4),
      overheadPerRoundSeconds: +(steady(grpc2.rounds) - steady(sim.rounds)).toFixed(4),
      simulatorJobSeconds: sim.seconds,
      grpcJobSeconds: grpc2.seconds,
    },
    manyClients: {
      clients: many,
      provisionSeconds,
      connectSeconds,
      connected: server.siteList().length,
      roundSeconds: +steady(grpcMany.rounds).toFixed(4),
      jobSeconds: grpcMany.seconds,
      rssMBAfterConnect: Math.round(rssAfterConnect / 2 ** 20),
      note: 'server and all clients in one process, each client with its own TLS connection',
    },
  };
  for (const c of clients) c.stop();
  await Promise.allSettled(runs);
  admin.close();
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
