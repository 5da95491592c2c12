/**
 * What the dashboard and /metrics cost a running federation: the same jobs through a real
 * deployment (FederationServer and its sites in this process, mutual TLS on loopback, jobs on the
 * data plane, submitted with the admin API) with observability off, and on: /metrics and the HTTPS
 * dashboard served, two dashboard event streams open (the overview and the job's page, as two
 * browser tabs would), /metrics scraped every second (five times Prometheus' usual rate), and the
 * job's tracked rows exported to a real MLflow tracking server on loopback (`mlflow server`, SQLite
 * backend, from .venv-mlflow; --no-mlflow leaves it out). The tracking store and the TensorBoard
 * event files are written in both (they have no off switch). Runs alternate off, on, off, on, ... in one sitting, so a slower spell of this shared machine
 * falls on both.
 *
 *   hello-fedavg   examples/hello-fedavg on 3 sites (tfjs MLP, 5 FedAvg rounds + cross-site evaluation)
 *   transfer-1g    a 1 GiB float32 model (16 tensors of 64 MiB, named by path) to 1 site and back,
 *                  one round; the site's trainer (`params: file`) returns the file it received unchanged
 *                  (and logs one value, `received`, also sent as its result's metric: something to track)
 *
 * Measured per run: the job's wall time (RUNNING → FINISHED in the job store: the MLflow runs are
 * finished before), and the process' CPU time over it (server, sites and watchers together; not
 * the MLflow server's own). Prints one JSON object (and writes --out).
 *
 *   nice -n 10 node --conditions=flotilla-source --import tsx bench/dashboard-overhead.ts [--repeat 3] [--jobs hello-fedavg,transfer-1g] [--no-mlflow] [--out bench/results/dashboard-overhead.json]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { get as httpGet } from 'node:http';
import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import { AdminClient } from '../src/admin/admin-client.ts';
import { SafetensorsWriter } from '../src/core/safetensors.ts';
import { FederationServer } from '../src/deploy/server.ts';
import { FederationSite } from '../src/deploy/site.ts';
import { loadKit } from '../src/provision/kit.ts';
import { parseProject } from '../src/provision/project.ts';
import { provision } from '../src/provision/provision.ts';
import { silentLogger } from '../src/util/log.ts';
import { type MlflowServer, readMlflowJob, startMlflow } from '../test/helpers/mlflow.ts';
import { commitFacts } from './commit.ts';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);

const arg = (name: string, d: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : d;
};
const repeat = Number(arg('repeat', '3'));
const jobs = arg('jobs', 'hello-fedavg,transfer-1g').split(',');
const out = arg('out', '');
const withMlflow = !process.argv.includes('--no-mlflow');
const repo = fileURLToPath(new URL('..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-dash-bench-'));
const MiB = 2 ** 20;

async function kits(name: string, sites: number): Promise<Record<string, string>> {
  const project = parseProject({
    name,
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1 },
      ...Array.from({ length: sites }, (_, i) => ({ type: 'client', name: `site-${i + 1}`, org: 'hub' })),
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
    ],
  });
  return (await provision(project, { outDir: join(tmp, name) })).kits;
}

/** The 1 GiB job: a model file named by path, a trainer that sends back what it received. */
async function transferJob(): Promise<string> {
  const dir = join(tmp, 'transfer-1g');
  mkdirSync(dir, { recursive: true });
  const model = join(tmp, 'model-1g.safetensors');
  const n = (Number(arg('tensor-mib', '64')) * MiB) / 4;
  const tensors = Array.from({ length: 16 }, (_, i) => ({ name: `t${String(i).padStart(2, '0')}`, dtype: 'F32' as const, shape: [n] }));
  const w = await SafetensorsWriter.open(model, tensors, {});
  const piece = new Float32Array(n).fill(0.25);
  for (const t of tensors) await w.write(t.name, new Uint8Array(piece.buffer));
  await w.close();
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(
    join(dir, 'job.yaml'),
    'name: transfer-1g\nminClients: 1\nmodel:\n  module: model.ts\n  export: initialModel\nworkflows:\n  - type: fedavg\n    rounds: 1\nexecutor:\n  params: file\n  trainer:\n    module: trainer.ts\n    factory: createTrainer\n',
  );
  writeFileSync(join(dir, 'model.ts'), `export function initialModel() { return ${JSON.stringify(model)}; }\n`);
  writeFileSync(
    join(dir, 'trainer.ts'),
    `export function createTrainer() {
  return async (flare) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      flare.log('received', 1);
      await flare.send({ params: new Map(), paramsPath: m.paramsPath, paramsType: 'FULL', metrics: { received: 1 }, meta: { numSamples: 1 }, currentRound: m.currentRound, totalRounds: m.totalRounds });
    }
  };
}
`,
  );
  return dir;
}

/** What a watcher of the dashboard does: two event streams read to the end, /metrics every second. */
function watch(
  server: FederationServer,
  ca: string,
  token: string,
  jobId: string,
): { stop(): Promise<{ events: number; scrapes: number }> } {
  let events = 0;
  let scrapes = 0;
  const reqs: { destroy(): void }[] = [];
  const stream = (path: string): void => {
    const req = request(
      { host: '127.0.0.1', port: server.dashboardPort!, path, ca, servername: 'localhost', headers: { authorization: `Bearer ${token}` } },
      (res) => res.on('data', (d: Buffer) => (events += d.toString().split('\n\n').length - 1)),
    );
    req.on('error', () => undefined);
    req.end();
    reqs.push(req);
  };
  stream('/api/events');
  stream(`/api/events?job=${encodeURIComponent(jobId)}`);
  const scraper = setInterval(() => {
    httpGet(`http://127.0.0.1:${server.metricsPort}/metrics`, (res) => {
      res.resume();
      res.on('end', () => scrapes++);
    }).on('error', () => undefined);
  }, 1000);
  return {
    async stop() {
      clearInterval(scraper);
      for (const r of reqs) r.destroy();
      return { events, scrapes };
    },
  };
}

interface Run {
  job: string;
  observed: boolean;
  seconds: number;
  cpuSeconds: number;
  state: string;
  events?: number;
  scrapes?: number;
  /** metric values MLflow holds for the job afterwards */
  mlflowValues?: number;
  /** the machine's 1-minute load average when the run ended (a shared machine) */
  load1: number;
}

let mlflow: MlflowServer | null = null;

async function runOnce(job: string, jobDir: string, sites: number, observed: boolean, k: Record<string, string>): Promise<Run> {
  const ws = join(tmp, `${job}-${observed ? 'on' : 'off'}-${Date.now()}`);
  const server = new FederationServer({
    kit: loadKit(k.server!, 'server'),
    workspace: join(ws, 'server'),
    host: '127.0.0.1',
    port: 0,
    log: silentLogger(),
    ...(observed && { metrics: { host: '127.0.0.1', port: 0 }, dashboard: { host: '127.0.0.1', port: 0 } }),
    ...(observed && mlflow && { mlflowUri: mlflow.uri }),
  });
  const port = await server.start();
  const running = Array.from({ length: sites }, (_, i) => {
    const s = new FederationSite({
      kit: loadKit(k[`site-${i + 1}`]!, 'client'),
      workspace: join(ws, `site-${i + 1}`),
      host: '127.0.0.1',
      port,
      log: silentLogger(),
    });
    return { s, done: s.run() };
  });
  const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
  try {
    while (server.siteList().length < sites) await new Promise((r) => setTimeout(r, 50));
    const token = observed ? (await admin.call('dashboard-token')).token : '';
    const cpu0 = process.cpuUsage();
    const id = await admin.submit(jobDir);
    const watcher = observed ? watch(server, readFileSync(join(k.server!, 'startup', 'rootCA.pem'), 'utf8'), token, id) : null;
    for (;;) {
      const st = server.store.get(id)!.state;
      if (['FINISHED', 'FAILED', 'ABORTED'].includes(st)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const cpu = process.cpuUsage(cpu0);
    const w = await watcher?.stop();
    const rec = server.store.get(id)!;
    const seconds = (Date.parse(rec.endedAt!) - Date.parse(rec.startedAt!)) / 1000;
    if (rec.state !== 'FINISHED') throw new Error(`${job} ended ${rec.state}: ${rec.detail}`);
    let mlflowValues: number | undefined;
    if (observed && mlflow) {
      const runs = Object.values(
        (
          await readMlflowJob(mlflow.uri, rec.name, id).catch((e: Error) => {
            const log = readFileSync(join(server.jobsDir, id, 'workspace', 'server', 'log.jsonl'), 'utf8');
            throw new Error(
              `${job}: not in MLflow (${e.message}); the job's log: ${log
                .split('\n')
                .filter((l) => /tracking|mlflow/i.test(l))
                .join('\n')}`,
            );
          })
        ).runs,
      );
      if (runs.some((r) => r.status !== 'FINISHED')) throw new Error(`${job}: MLflow runs not FINISHED`);
      mlflowValues = runs.reduce((n, r) => n + Object.values(r.metrics).reduce((m, h) => m + h.length, 0), 0);
    }
    return {
      job,
      observed,
      seconds,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      state: rec.state,
      load1: +loadavg()[0]!.toFixed(1),
      ...(w && w),
      ...(mlflowValues !== undefined && { mlflowValues }),
    };
  } finally {
    admin.close();
    for (const r of running) r.s.stop('bench over');
    await Promise.all(running.map((r) => r.done));
    await server.stop();
    rmSync(ws, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** mean and half the range, 3 digits */
const spread = (xs: number[]): { mean: number; plusMinus: number } => ({
  mean: +(xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3),
  plusMinus: +((Math.max(...xs) - Math.min(...xs)) / 2).toFixed(3),
});

try {
  if (withMlflow) mlflow = await startMlflow(tmp);
  const runs: Run[] = [];
  for (const job of jobs) {
    const sites = job === 'hello-fedavg' ? 3 : 1;
    const k = await kits(job, sites);
    const dir = job === 'hello-fedavg' ? join(repo, 'examples/hello-fedavg') : await transferJob();
    // a first run warms the module cache and the disk; not counted
    await runOnce(job, dir, sites, false, k);
    for (let i = 0; i < repeat; i++)
      for (const observed of i % 2 ? [true, false] : [false, true]) {
        const r = await runOnce(job, dir, sites, observed, k);
        runs.push(r);
        process.stderr.write(`${JSON.stringify(r)}\n`);
      }
  }
  const summary = Object.fromEntries(
    jobs.map((job) => {
      const of = (obs: boolean) => runs.filter((r) => r.job === job && r.observed === obs);
      const off = { seconds: median(of(false).map((r) => r.seconds)), cpuSeconds: median(of(false).map((r) => r.cpuSeconds)) };
      const on = { seconds: median(of(true).map((r) => r.seconds)), cpuSeconds: median(of(true).map((r) => r.cpuSeconds)) };
      return [
        job,
        {
          off,
          on,
          wallChange: +(on.seconds / off.seconds - 1).toFixed(3),
          cpuChange: +(on.cpuSeconds / off.cpuSeconds - 1).toFixed(3),
          offRange: [Math.min(...of(false).map((r) => r.seconds)), Math.max(...of(false).map((r) => r.seconds))],
          onRange: [Math.min(...of(true).map((r) => r.seconds)), Math.max(...of(true).map((r) => r.seconds))],
          offMean: { seconds: spread(of(false).map((r) => r.seconds)), cpuSeconds: spread(of(false).map((r) => r.cpuSeconds)) },
          onMean: { seconds: spread(of(true).map((r) => r.seconds)), cpuSeconds: spread(of(true).map((r) => r.cpuSeconds)) },
        },
      ];
    }),
  );
  const result = {
    bench: 'dashboard-overhead',
    ...commitFacts(),
    cpus: cpus().length,
    loadAverage: loadavg().map((x) => +x.toFixed(1)),
    repeat,
    mlflow: withMlflow,
    runs,
    summary,
  };
  if (out) writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await mlflow?.stop();
  rmSync(tmp, { recursive: true, force: true });
}
