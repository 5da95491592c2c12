/** The deployment subcommands of `flotilla`: provision, server, client, admin, poc. */
import { type Command, InvalidArgumentError } from 'commander';
import { join, resolve } from 'node:path';
import { AdminClient } from '../admin/admin-client.ts';
import { ADMIN_COMMANDS, ADMIN_COMMAND_TABLE, type AdminCommand, type AdminReply, isAdminCommand } from '../deploy/admin-commands.ts';
import { loadKit } from '../provision/kit.ts';
import { readProject } from '../provision/project.ts';
import { provision } from '../provision/provision.ts';
import { type LogLevel, fileLogger } from '../util/log.ts';
import { applyLogLevel, logLevelOption } from './log-level.ts';
import { mlflowFlag } from './mlflow-flag.ts';
import { FederationSite } from '../deploy/site.ts';
import { withDownloadBar, withWaitLine } from './wait-line.ts';
import { POC_ADMIN, pocPrepare, pocStart, pocStatus, pocStop, readPrivacyFile } from '../deploy/poc.ts';
import { FederationServer } from '../deploy/server.ts';
import { FINAL_STATES } from '../deploy/job-store.ts';
import { followJob, formatJobStatus } from './job-status.ts';
import { CSV_HEADER, TABLE_HEADER, csvLines, tableLines } from '../tracking/format.ts';
import { startResourceReport } from '../util/resource-report.ts';

const out = (s: string): void => void process.stdout.write(`${s}\n`);

function port(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`--port must be 0–65535, got "${v}"`);
  return n;
}

/** --data-port: a port, or "none" to carry job payloads over the gRPC port (commander turns a parser's null into ''). */
function dataPort(v: string): number | 'none' {
  if (v === 'none') return 'none';
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError(`--data-port must be 0–65535 or "none", got "${v}"`);
  return n;
}

function onSignals(stop: () => Promise<void> | void): void {
  let stopping = false;
  const handler = (): void => {
    if (stopping) process.exit(1);
    stopping = true;
    void Promise.resolve(stop()).finally(() => process.exit(0));
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

export function registerDeploymentCommands(program: Command): void {
  program
    .command('provision')
    .description('create startup kits (certificates, configs, signed) for every participant of project.yml')
    .argument('<project.yml>')
    .option('-o, --out <dir>', 'output folder', 'workspace')
    .action(async (file: string, o: { out: string }) => {
      const r = await provision(readProject(file), { outDir: o.out });
      out(`Provisioned ${Object.keys(r.kits).length} startup kits in ${r.prodDir}`);
      for (const [name, dir] of Object.entries(r.kits)) out(`  ${name.padEnd(28)} ${dir}`);
      out(`The CA key stays in ${join(r.projectDir, 'state')}: keep it safe, it is in no kit.`);
    });

  const server = program.command('server').description('the federation server');
  server
    .command('start')
    .description('start the server from its startup kit (checks the kit signature first)')
    .argument('<kit>', 'the server kit folder (or its startup/ folder)')
    .option('-w, --workspace <dir>', 'job store and job workspaces (default: <kit>/workspace)')
    .option('-p, --port <port>', "override the kit's port", port)
    .option(
      '--data-port <port|none>',
      "override the kit's data plane port (jobs' model payloads; 0: any free port, none: over the gRPC port)",
      dataPort,
    )
    .option('--metrics-port <port>', 'serve Prometheus metrics at http://<metrics-host>:<port>/metrics (plain HTTP, no token)', port)
    .option('--metrics-host <host>', 'the address /metrics listens on', '127.0.0.1')
    .option('--dashboard-port <port>', "serve the web dashboard over HTTPS with the server's certificate (docs/dashboard.md)", port)
    .option('--dashboard-host <host>', "the address the dashboard listens on (default: the kit's listen address)")
    .option('--no-resume', 'a job the server was running when it stopped is marked ABORTED_BY_RESTART (requeue: round 0), not resumed')
    .addOption(logLevelOption())
    .option(
      '--mlflow <uri>',
      "export every job's tracked metrics to this MLflow tracking server (http://host:port; docs/tracking.md)",
      mlflowFlag,
    )
    .action(
      async (
        kitDir: string,
        o: {
          workspace?: string;
          port?: number;
          dataPort?: number | 'none';
          metricsPort?: number;
          metricsHost: string;
          dashboardPort?: number;
          dashboardHost?: string;
          logLevel?: LogLevel;
          resume: boolean;
          mlflow?: string;
        },
      ) => {
        applyLogLevel(o.logLevel);
        startResourceReport();
        const kit = loadKit(kitDir, 'server');
        const workspace = resolve(o.workspace ?? join(kit.root, 'workspace'));
        const log = fileLogger(join(workspace, 'log.jsonl'), 'server');
        const s = new FederationServer({
          kit,
          workspace,
          log,
          resumeJobs: o.resume,
          ...(o.port !== undefined && { port: o.port }),
          ...(o.dataPort !== undefined && { dataPort: o.dataPort === 'none' ? null : o.dataPort }),
          ...(o.metricsPort !== undefined && { metrics: { host: o.metricsHost, port: o.metricsPort } }),
          ...(o.dashboardPort !== undefined && {
            dashboard: { port: o.dashboardPort, ...(o.dashboardHost !== undefined && { host: o.dashboardHost }) },
          }),
          ...(o.mlflow !== undefined && { mlflowUri: o.mlflow }),
        });
        const p = await s.start();
        const data = s.dataPort === null ? 'job payloads over gRPC' : `data plane on port ${s.dataPort}`;
        out(`Server ${kit.config.name} of project ${kit.config.project} listening on port ${p}, ${data} (workspace ${workspace})`);
        if (s.metricsPort !== null) out(`Prometheus metrics at http://${o.metricsHost}:${s.metricsPort}/metrics`);
        if (s.dashboardPort !== null)
          out(`Dashboard at https://${kit.config.listen.host}:${s.dashboardPort}/ (sign in: flotilla admin <kit> dashboard-token)`);
        onSignals(() => s.stop());
      },
    );

  const client = program.command('client').description('a client site');
  client
    .command('start')
    .description('connect this site to the server and run the jobs it deploys')
    .argument('<kit>', 'the client kit folder (or its startup/ folder)')
    .option('-w, --workspace <dir>', 'where deployed jobs run (default: <kit>/workspace)')
    .option('-p, --port <port>', "dial this port on the kit's server host instead of the kit's (a port forward or proxy)", port)
    .option('--data-port <port|none>', 'the data plane port to dial (default: the one the server offers; none: jobs over gRPC)', dataPort)
    .addOption(logLevelOption())
    .action(async (kitDir: string, o: { workspace?: string; port?: number; dataPort?: number | 'none'; logLevel?: LogLevel }) => {
      applyLogLevel(o.logLevel);
      startResourceReport();
      const kit = loadKit(kitDir, 'client');
      const workspace = resolve(o.workspace ?? join(kit.root, 'workspace'));
      const log = fileLogger(join(workspace, 'log.jsonl'), kit.config.name);
      let announced = false;
      const c = new FederationSite({
        kit,
        workspace,
        log,
        ...(o.port !== undefined && { port: o.port }),
        ...(o.dataPort !== undefined && { dataPort: o.dataPort === 'none' ? null : o.dataPort }),
        onConnected: () => {
          if (!announced) out(`Site ${kit.config.name} connected to ${kit.config.server.host}:${kit.config.server.port}`);
          announced = true;
        },
      });
      onSignals(() => c.stop('signal'));
      const reason = await c.run();
      out(`Site ${kit.config.name} stopped: ${reason}`);
    });

  program
    .command('admin')
    .description(
      `administer the federation with an admin kit: ${ADMIN_COMMANDS.map((c) => {
        const o = ADMIN_COMMAND_TABLE[c].operand;
        return o ? `${c} <${o.what.replace(' ', '-')}>` : c;
      }).join(' | ')}`,
    )
    .argument('<kit>', 'the admin kit folder')
    .argument('<command>', `one of ${ADMIN_COMMANDS.join(', ')}`)
    .argument('[arg]', 'the job folder, job id or site name the command takes')
    .option('-o, --out <dir>', 'for download: where results go', 'downloads')
    .option('--json', 'print the raw JSON result')
    .option('--follow-links', 'for submit: follow symbolic links whose target is inside the job folder (default: a link is refused)')
    .option('--follow', 'for metrics: keep printing rows as the sites log them; for status: a line per change; until the job ends')
    .option('--wait', 'for submit: follow the job until it ends (exit code 1 unless it FINISHED)')
    .option('--csv', 'for metrics: CSV (id,job,site,round,step,kind,key,value,time)')
    .addHelpText('after', `\nCommands:\n${ADMIN_COMMANDS.map((c) => `  ${c.padEnd(14)} ${ADMIN_COMMAND_TABLE[c].summary}`).join('\n')}`)
    .action(async (kitDir: string, command: string, arg: string | undefined, o: AdminFlags) => {
      if (!isAdminCommand(command))
        throw new InvalidArgumentError(`unknown admin command "${command}": use one of ${ADMIN_COMMANDS.join(', ')}`);
      const operand = ADMIN_COMMAND_TABLE[command].operand;
      if (operand && !arg) throw new InvalidArgumentError(`admin ${command} needs a ${operand.what}`);
      if (!operand && arg !== undefined) throw new InvalidArgumentError(`admin ${command} takes no argument, got "${arg}"`);
      const admin = new AdminClient(kitDir);
      try {
        if (command === 'submit') {
          const jobId = await withWaitLine(`submit ${arg}: packing and sending the job folder`, () =>
            admin.submit(arg!, { followLinks: o.followLinks ?? false }),
          );
          out(o.json ? JSON.stringify({ jobId }) : `Submitted job ${jobId}`);
          if (o.wait) await follow(admin, jobId, o);
        } else if (command === 'status' && o.follow) {
          await follow(admin, arg!, o);
        } else if (command === 'download') {
          const dir = await withDownloadBar((onProgress) => admin.download(arg!, o.out, onProgress));
          out(o.json ? JSON.stringify({ dir }) : `Downloaded job ${arg} to ${dir}`);
        } else if (command === 'metrics') {
          await printMetrics(admin, arg!, o);
        } else {
          const result = await withWaitLine(`${command}: waiting for the server`, () => runCommand(admin, command, arg));
          out(o.json ? JSON.stringify(result.reply) : format(result, admin));
        }
      } finally {
        admin.close();
      }
    });

  const poc = program.command('poc').description('proof-of-concept mode: a server and N clients on this machine');
  poc
    .command('prepare')
    .option('-n, --clients <n>', 'number of client sites', (v) => Number(v), 2)
    .option('-w, --workspace <dir>', 'POC folder', 'workspace/poc')
    .option('-p, --port <port>', 'server port', port, 8002)
    .option('--force', 're-provision a folder that already holds a POC (with --keep-jobs or --discard-jobs)')
    .option('--keep-jobs', "with --force: the job store and every job's results survive")
    .option('--discard-jobs', "with --force: the job store and every job's results are deleted")
    .option('--privacy <file>', "sites' privacy policies: a YAML/JSON file {site-1: {filters: [...]}, ...} (docs/filters.md)")
    .option('--he', 'provision CKKS keys for jobs with the he filter: sites get the secret key, the server the public context')
    .action(
      async (o: {
        clients: number;
        workspace: string;
        port: number;
        force?: boolean;
        keepJobs?: boolean;
        discardJobs?: boolean;
        privacy?: string;
        he?: boolean;
      }) => {
        if (!Number.isInteger(o.clients) || o.clients < 1) throw new InvalidArgumentError('--clients must be a positive integer');
        if ((o.keepJobs || o.discardJobs) && !o.force) throw new InvalidArgumentError('--keep-jobs and --discard-jobs go with --force');
        if (o.force && o.keepJobs === o.discardJobs)
          throw new InvalidArgumentError(
            '--force needs exactly one of --keep-jobs (the job store survives) or --discard-jobs (it is deleted)',
          );
        const l = await pocPrepare({
          clients: o.clients,
          workspace: o.workspace,
          port: o.port,
          ...(o.force && { force: { jobs: o.keepJobs ? ('keep' as const) : ('discard' as const) } }),
          ...(o.privacy !== undefined && { privacy: readPrivacyFile(o.privacy) }),
          ...(o.he && { he: true }),
        });
        out(
          `POC prepared in ${l.workspace}: server, ${l.clients.length} clients, admin ${POC_ADMIN}\nNext: flotilla poc start -w ${o.workspace}; then flotilla admin ${l.admin} submit <job-dir>`,
        );
      },
    );
  poc
    .command('start')
    .option('-w, --workspace <dir>', 'POC folder', 'workspace/poc')
    .option('--dashboard-port <port>', "the server's web dashboard over HTTPS (docs/dashboard.md)", port)
    .option('--metrics-port <port>', "the server's Prometheus /metrics on 127.0.0.1", port)
    .option(
      '--mlflow <uri>',
      "the server exports every job's tracked metrics to this MLflow tracking server (docs/tracking.md)",
      mlflowFlag,
    )
    .addOption(logLevelOption())
    .action(async (o: { workspace: string; dashboardPort?: number; metricsPort?: number; mlflow?: string; logLevel?: LogLevel }) => {
      const { pids } = await withWaitLine('poc start: waiting for the server to listen', () =>
        pocStart(o.workspace, {
          ...(o.logLevel !== undefined && { logLevel: o.logLevel }),
          ...(o.dashboardPort !== undefined && { dashboardPort: o.dashboardPort }),
          ...(o.metricsPort !== undefined && { metricsPort: o.metricsPort }),
          ...(o.mlflow !== undefined && { mlflow: o.mlflow }),
        }),
      );
      out(`Started ${Object.keys(pids).join(', ')} (logs in ${join(resolve(o.workspace), 'logs')})`);
      if (o.dashboardPort !== undefined)
        out(`Dashboard at https://localhost:${o.dashboardPort}/ (sign in: flotilla admin <admin-kit> dashboard-token)`);
      if (o.metricsPort !== undefined) out(`Prometheus metrics at http://127.0.0.1:${o.metricsPort}/metrics`);
    });
  poc
    .command('status')
    .description('whether each POC process (server, sites) still runs')
    .option('-w, --workspace <dir>', 'POC folder', 'workspace/poc')
    .action((o: { workspace: string }) => {
      const rows = pocStatus(o.workspace);
      for (const r of rows) out(`${r.name.padEnd(10)} pid ${String(r.pid).padEnd(8)} ${r.running ? 'running' : `not running: ${r.why}`}`);
      const down = rows.filter((r) => !r.running).map((r) => r.name);
      if (down.length) {
        out(`${down.join(', ')} not running: see ${join(resolve(o.workspace), 'logs')}; restart with flotilla poc stop, then poc start`);
        process.exitCode = 1;
      }
    });
  poc
    .command('stop')
    .option('-w, --workspace <dir>', 'POC folder', 'workspace/poc')
    .action((o: { workspace: string }) => {
      const r = pocStop(o.workspace);
      out(`Stopped ${r.stopped.join(', ') || 'nothing'}`);
      for (const k of r.skipped) out(`Left ${k.name} alone: ${k.why}`);
    });
}

/** Follows a job to its end, a line per change (the summary at the end); exit code 1 unless it FINISHED. */
async function follow(admin: AdminClient, job: string, o: AdminFlags): Promise<void> {
  const final = await followJob(
    () => admin.call('status', { job }),
    (state) => (FINAL_STATES as readonly string[]).includes(state),
    (line) => (o.json ? undefined : out(line)),
  );
  out(o.json ? JSON.stringify(final) : formatJobStatus(final));
  if (final.state !== 'FINISHED') process.exitCode = 1;
}

interface AdminFlags {
  out: string;
  wait?: boolean;
  json?: boolean;
  followLinks?: boolean;
  follow?: boolean;
  csv?: boolean;
}

/**
 * `admin metrics <job>`: every row so far, page by page; with --follow, long polls for new rows
 * (the server answers as soon as one is recorded) until the job has ended and none are left.
 */
async function printMetrics(admin: AdminClient, job: string, o: AdminFlags): Promise<void> {
  let after = 0;
  let first = true;
  for (;;) {
    const r = await admin.call('metrics', { job, after, ...(o.follow && { waitMs: 20_000 }) });
    if (o.json) for (const row of r.rows) out(JSON.stringify(row));
    else {
      if (first) out(o.csv ? CSV_HEADER : TABLE_HEADER);
      for (const line of o.csv ? csvLines(r.rows) : tableLines(r.rows)) out(line);
    }
    first = false;
    after = r.lastId;
    const ended = FINAL_STATES.includes(r.state);
    if (!r.rows.length && (!o.follow || ended)) return;
  }
}

type Replied = { [C in AdminCommand]: { command: C; reply: AdminReply<C> } }[AdminCommand];

/** A command other than submit, download and metrics, its operand filling its one argument. */
async function runCommand(
  admin: AdminClient,
  command: Exclude<AdminCommand, 'submit' | 'download' | 'metrics'>,
  arg: string | undefined,
): Promise<Replied> {
  const job = { job: arg! };
  switch (command) {
    case 'status':
      return { command, reply: await admin.call(command, job) };
    case 'abort':
      return { command, reply: await admin.call(command, job) };
    case 'requeue':
      return { command, reply: await admin.call(command, job) };
    case 'shutdown-site':
      return { command, reply: await admin.call(command, { site: arg! }) };
    case 'list':
      return { command, reply: await admin.call(command) };
    case 'sites':
      return { command, reply: await admin.call(command) };
    case 'audit':
      return { command, reply: await admin.call(command) };
    case 'dashboard-token':
      return { command, reply: await admin.call(command) };
  }
}

function format(r: Replied, admin: AdminClient): string {
  if (r.command === 'list') {
    if (!r.reply.length) return 'no jobs';
    return [
      `${'JOB'.padEnd(32)} ${'STATE'.padEnd(20)} ${'SUBMITTER'.padEnd(28)} SUBMITTED`,
      ...r.reply.map((j) => `${j.id.padEnd(32)} ${j.state.padEnd(20)} ${j.submitter.padEnd(28)} ${j.submittedAt}`),
    ].join('\n');
  }
  if (r.command === 'sites') {
    if (!r.reply.length) return 'no sites connected';
    return [
      `${'SITE'.padEnd(20)} ${'ORG'.padEnd(16)} ${'LAST SEEN'.padEnd(10)} JOBS`,
      ...r.reply.map(
        (s) =>
          `${s.site.padEnd(20)} ${s.org.padEnd(16)} ${`${(s.lastSeenMsAgo / 1000).toFixed(1)}s`.padEnd(10)} ${s.runningJobs.join(',')}`,
      ),
    ].join('\n');
  }
  if (r.command === 'dashboard-token') {
    const where = r.reply.dashboardPort === null ? null : `https://${admin.kit.config.server.host}:${r.reply.dashboardPort}/`;
    return [
      `Dashboard token for ${r.reply.user} (${r.reply.role}), valid until ${r.reply.expiresAt}:`,
      r.reply.token,
      where
        ? `Open ${where}#token=${r.reply.token}\n(the server's certificate is issued by the project CA: rootCA.pem in your kit)`
        : 'This server serves no dashboard: start it with --dashboard-port <port>.',
    ].join('\n');
  }
  if (r.command === 'status') return formatJobStatus(r.reply);
  return JSON.stringify(r.reply, null, 2);
}
