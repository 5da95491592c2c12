/** `flotilla` command line. Each subcommand validates its flags and says what to do next on error. */
import { Command, InvalidArgumentError } from 'commander';
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import type { MetricsExportOptions } from './metrics-export.ts';
import { mlflowFlag } from './mlflow-flag.ts';
import type { LogLevel } from '../util/log.ts';
import { applyLogLevel, logLevelOption } from './log-level.ts';
// Everything else is imported by the action that needs it: a command loads only its own module
// graph (validate does not pay for gRPC, SQLite, the simulator or the dashboard; docs/benchmarks.md).
import type { simulate as Simulate } from '../simulator/simulator.ts';
import type { SimulationDashboardServer } from './simulate-dashboard.ts';

function positiveInt(name: string, min = 1) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got "${v}"`);
    return n;
  };
}

const program = new Command()
  .name('flotilla')
  .description('Federated learning for massive models: simulate, deploy and operate federated jobs.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

program
  .command('simulate')
  .description('run a job folder with N simulated clients on this machine')
  .argument('<job-dir>', 'job folder with job.yaml / job.json')
  .option('-n, --clients <n>', 'number of clients (site-1 … site-N)', positiveInt('--clients'), 3)
  .option('-t, --threads <t>', 'worker threads for the clients (0 = all in the main thread)', positiveInt('--threads', 0))
  .option('-w, --workspace <dir>', 'where models, metrics and logs go (default: workspace/<job name>)')
  .option('--offload', 'keep the global model and the running sum on disk (server memory independent of model size)')
  .option(
    '--python <interpreter>',
    'what {python} in script executors runs: sets FLOTILLA_PYTHON (default: $FLOTILLA_PYTHON, else python3 on PATH)',
  )
  .option('--dashboard [port]', 'serve the web dashboard of the run on http://127.0.0.1:<port> (default 8480; 0: any free port)')
  .option(
    '--mlflow <uri>',
    'also export what the sites log to this MLflow tracking server (http://host:port; docs/tracking.md)',
    mlflowFlag,
  )
  .addOption(logLevelOption())
  .action(
    async (
      jobDir: string,
      o: {
        clients: number;
        threads?: number;
        workspace?: string;
        offload?: boolean;
        python?: string;
        dashboard?: string | true;
        logLevel?: LogLevel;
        mlflow?: string;
      },
    ) => {
      applyLogLevel(o.logLevel);
      const [{ readJobConfig }, { simulate }, { RoundTable }, { serveSimulationDashboard }] = await Promise.all([
        import('../runtime/job-config.ts'),
        import('../simulator/simulator.ts'),
        import('./round-table.ts'),
        import('./simulate-dashboard.ts'),
      ]);
      const { config } = readJobConfig(jobDir);
      // an explicit flag wins over the environment, like the variable itself over site settings
      if (o.python !== undefined) process.env.FLOTILLA_PYTHON = o.python;
      const workspace = resolve(o.workspace ?? join('workspace', config.name));
      const table = new RoundTable();
      process.stdout.write(`Simulating job "${config.name}" with ${o.clients} clients (workspace ${workspace})\n`);
      const dash = o.dashboard === undefined ? null : await serveSimulationDashboard(config.name, workspace, dashboardPort(o.dashboard));
      if (dash) process.stdout.write(`Dashboard at ${dash.url}\n`);
      let r: Awaited<ReturnType<typeof Simulate>>;
      try {
        r = await simulate({
          jobDir,
          clients: o.clients,
          workspace,
          ...(o.threads !== undefined && { threads: o.threads }),
          ...(o.offload && { offload: true }),
          ...(o.mlflow !== undefined && { mlflowUri: o.mlflow }),
          ...(dash && { onStart: dash.hooks.onStart, onMetric: dash.hooks.onMetric, signal: dash.hooks.signal }),
          onRound: (s) => {
            table.row(s);
            dash?.hooks.onRound(s);
          },
          onProgress: (p) => {
            table.progress(p);
            dash?.hooks.onProgress(p);
          },
          onTransfer: (t) => {
            table.transfer(t);
            dash?.hooks.onTransfer(t);
          },
          onTracked: (row) => {
            table.tracked(row);
            dash?.hooks.onTracked(row);
          },
        });
        dash?.ended(r);
      } catch (e) {
        dash?.ended(e as Error);
        await lingerThenClose(dash);
        throw e;
      }
      await lingerThenClose(dash);
      if (r.crossSite) printMatrix(r.crossSite as Record<string, Record<string, Record<string, number>>>);
      process.stdout.write(
        `\nDone in ${r.seconds.toFixed(1)} s. Global model: ${join(workspace, 'server', 'global_model.safetensors')}\nMetrics: ${join(workspace, 'server', 'metrics.jsonl')}\n`,
      );
    },
  );

function dashboardPort(v: string | true): number {
  if (v === true) return 8480;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`--dashboard takes a port 0–65535, got "${v}"`);
  return n;
}

/** On a terminal the dashboard stays up after the run until Ctrl-C, so its results can be read; otherwise it closes. */
async function lingerThenClose(dash: SimulationDashboardServer | null): Promise<void> {
  if (!dash) return;
  if (process.stdin.isTTY && process.stdout.isTTY) {
    process.stdout.write(`The run is over; the dashboard stays at ${dash.url.split('#')[0]} until Ctrl-C.\n`);
    await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  }
  await dash.close();
}

program
  .command('validate')
  .description('check a job folder without running it: its config, and every module, script and interpreter it names')
  .argument('<job-dir>')
  .option('--python <interpreter>', 'what {python} resolves to: sets FLOTILLA_PYTHON (default: $FLOTILLA_PYTHON, else python3 on PATH)')
  .action(async (jobDir: string, o: { python?: string }) => {
    if (o.python !== undefined) process.env.FLOTILLA_PYTHON = o.python;
    const { checkJob } = await import('../runtime/job-check.ts');
    const job = await checkJob(jobDir);
    const { resolveWorkflow } = await import('../workflows/registry.ts');
    // each workflow module of the job loads and its args pass its schema (fail fast, file and field named)
    for (let i = 0; i < job.config.workflows.length; i++) await resolveWorkflow(job, i);
    const { config, file } = job;
    process.stdout.write(
      `${file}: ok (job "${config.name}", ${config.workflows.map((w) => (w.type === 'custom' ? `custom ${w.module}` : w.type)).join(' → ')}, min ${config.minClients} clients; modules, scripts and interpreters resolved)\n`,
    );
  });

program
  .command('new')
  .description('write a runnable job folder from a template (--list shows the templates)')
  .argument('[dir]', 'the new job folder (absent or empty)')
  .option('--template <name>', 'the template (flotilla new --list)')
  .option('--list', 'list the templates')
  .action(async (dir: string | undefined, o: { template?: string; list?: boolean }) => {
    const { createJob, listTemplates, NewJobError } = await import('./new.ts');
    if (o.list) {
      process.stdout.write(listTemplates());
      return;
    }
    if (!dir)
      throw new NewJobError('name the new job folder: flotilla new <dir> --template <name> (flotilla new --list shows the templates)');
    if (!o.template) throw new NewJobError(`choose a template: flotilla new ${dir} --template <name>\n${listTemplates()}`);
    const job = createJob(dir, o.template);
    process.stdout.write(
      `Created job "${job.name}" in ${job.dir} from template ${o.template}: ${job.files.join(', ')}\nNext: see ${join(job.dir, 'README.md')}; in short, npx flotilla simulate ${dir} --clients ${job.minClients}\n`,
    );
  });

program
  .command('metrics')
  .description("what a simulation's sites logged (its server/tracking.sqlite): scalars, texts, params, round metrics")
  .argument('[workspace]', 'the simulation workspace, or a tracking.sqlite / jobs.sqlite file', 'workspace')
  .option('--job <id>', 'the job (default: the last one recorded)')
  .option('--csv', 'CSV (id,job,site,round,step,kind,key,value,time)')
  .option('--tensorboard <dir>', 'instead of printing: write the job as TensorBoard runs under <dir> (docs/tracking.md)')
  .option('--mlflow <uri>', 'instead of printing: export the job to this MLflow tracking server (http://host:port)', mlflowFlag)
  .option('--experiment <name>', "with --mlflow: the MLflow experiment (default: the job's name, else its id)")
  .action(async (where: string, o: { job?: string; csv?: boolean } & MetricsExportOptions) => {
    const [{ trackingPath }, { TrackingStore }, { CSV_HEADER, TABLE_HEADER, csvLines, tableLines }] = await Promise.all([
      import('../simulator/simulator.ts'),
      import('../tracking/store.ts'),
      import('../tracking/format.ts'),
    ]);
    const file = where.endsWith('.sqlite') ? where : trackingPath(resolve(where));
    if (!existsSync(file)) throw new Error(`${file} does not exist: run flotilla simulate first, or name a workspace or .sqlite file`);
    const store = TrackingStore.open(file);
    try {
      const job = o.job ?? store.jobs().at(-1);
      if (!job) throw new Error(`${file} holds no tracked rows`);
      const rows = store.all(job);
      if (!rows.length) throw new Error(`${file} holds no rows of job ${job} (jobs: ${store.jobs().join(', ')})`);
      if (o.tensorboard || o.mlflow) {
        const { exportRecordedJob } = await import('./metrics-export.ts');
        for (const line of await exportRecordedJob(store, file, job, o)) process.stdout.write(`Exported ${line}\n`);
        return;
      }
      process.stdout.write(`${[o.csv ? CSV_HEADER : TABLE_HEADER, ...(o.csv ? csvLines(rows) : tableLines(rows))].join('\n')}\n`);
    } finally {
      store.close();
    }
  });

program
  .command('decrypt')
  .description("an he job's encrypted global model (global_model.safetensors) decrypted with a site's HE context (docs/filters.md)")
  .argument('<model>', 'the encrypted model file')
  .requiredOption('--context <path>', "a site's he_context.json, or its startup kit folder")
  .requiredOption('-o, --out <file>', 'where the plain model goes (safetensors)')
  .action(async (model: string, o: { context: string; out: string }) => {
    const [
      { SafetensorsFile, writeStreamToFile },
      { HE_CONTEXT_FILE, heContextFromFile },
      { decryptStream, readHeMeta },
      { resolveStartup },
    ] = await Promise.all([
      import('../core/safetensors.ts'),
      import('../filters/he-context.ts'),
      import('../filters/he-stream.ts'),
      import('../provision/kit.ts'),
    ]);
    const ctxFile = o.context.endsWith('.json') ? o.context : join(resolveStartup(o.context), HE_CONTEXT_FILE);
    const ctx = await heContextFromFile(ctxFile);
    if (!ctx.canDecrypt) throw new Error(`${ctxFile} has no secret key (a server's context cannot decrypt): use a site's`);
    const file = await SafetensorsFile.open(model);
    try {
      const stream = file.stream();
      if (!readHeMeta(stream.header.metadata)) throw new Error(`${model} is not encrypted (no flotilla.he metadata)`);
      const plain = decryptStream(stream, ctx);
      await writeStreamToFile(o.out, plain);
      process.stdout.write(`Decrypted ${model} to ${o.out}: ${plain.header.tensors.length} tensors\n`);
    } finally {
      await file.close();
    }
  });

// The deployment commands' module graph (gRPC, TLS, SQLite, provisioning) loads only when the
// command line may name one of them: not for the local commands above, whose names come first.
const LOCAL_COMMANDS = ['simulate', 'validate', 'new', 'metrics', 'decrypt', '--version', '-V'];
if (!LOCAL_COMMANDS.includes(process.argv[2] ?? '')) (await import('./deploy-commands.ts')).registerDeploymentCommands(program);

function printMatrix(m: Record<string, Record<string, Record<string, number> | { error: string }>>): void {
  const evaluators = [...new Set(Object.values(m).flatMap((r) => Object.keys(r)))].sort();
  const key =
    Object.values(m)
      .flatMap((r) => Object.values(r))
      .flatMap((x) => Object.keys(x))
      .find((k) => k.includes('acc')) ?? 'val_loss';
  process.stdout.write(`\nCross-site evaluation (${key}; rows: model, columns: data of site)\n`);
  process.stdout.write(['model'.padEnd(10), ...evaluators.map((e) => e.padStart(10))].join(' ') + '\n');
  for (const [owner, row] of Object.entries(m)) {
    const cells = evaluators.map((e) => {
      const c = row[e];
      if (!c) return '-'.padStart(10);
      if ('error' in c) return 'error'.padStart(10);
      const v = c[key];
      return (v === undefined ? '-' : v.toFixed(4)).padStart(10);
    });
    process.stdout.write([owner.padEnd(10), ...cells].join(' ') + '\n');
  }
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  const err = e as Error;
  process.stderr.write(`flotilla: ${err.message}\n`);
  if (process.env.FLOTILLA_DEBUG) process.stderr.write(`${err.stack}\n`);
  process.exitCode = 1;
}
