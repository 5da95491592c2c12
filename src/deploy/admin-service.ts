/**
 * The admin service of a federation server: each Admin call is checked against the admin command
 * table (known command, arguments, the caller's role from its certificate), run, audited and
 * answered with the command's reply or a typed failure `{ code, message }`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { JobConfigError } from '../runtime/job-config.ts';
import type { AdminReplyWire, AdminRequestWire, DownloadPieceWire } from '../transport/grpc/wire.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import type { Logger } from '../util/log.ts';
import { describeZodError } from '../util/zod-error.ts';
import {
  ADMIN_COMMANDS,
  ADMIN_COMMAND_TABLE,
  type AdminArgs,
  type AdminCommand,
  AdminError,
  type AdminReply,
  isAdminCommand,
} from './admin-commands.ts';
import { type AdminUser, type Target, authorize, isRole } from './authz.ts';
import { listResults, sendResults } from './download.ts';
import { BundleError, unpackJob } from './job-bundle.ts';
import { receiveJobStream } from './job-stream.ts';
import { DiskSpaceError } from '../util/disk-space.ts';
import type { JobScheduler } from './job-scheduler.ts';
import { FINAL_STATES, type JobRecord, type JobStore } from './job-store.ts';
import type { SessionRegistry } from './session-registry.ts';

export interface AdminServiceOptions {
  store: JobStore;
  scheduler: JobScheduler;
  sessions: SessionRegistry;
  maxJobBytes: number;
  /** bytes that must stay free on the workspace's disk after a job folder is written (default: disk-space.ts) */
  minFreeBytes?: number;
  log: Logger;
  /** signs dashboard tokens for the calling admin; dashboardPort() says where the page is served */
  dashboard: { issue(user: AdminUser): { token: string; expiresAt: string }; dashboardPort(): number | null };
}

interface Call<C extends AdminCommand> {
  args: AdminArgs<C>;
  blob: Uint8Array;
  user: AdminUser;
  /** throws an AdminError('denied') unless the caller may act on `target` */
  check: (target: Target) => void;
  /** set on Admin.Download: the files stream through it */
  write: ((p: DownloadPieceWire) => Promise<void>) | undefined;
  /** set on Admin.Upload: the job stream's bytes as they arrive */
  upload: AsyncIterable<Uint8Array> | undefined;
}
type Handlers = { [C in AdminCommand]: (call: Call<C>) => Promise<AdminReply<C>> | AdminReply<C> };

const EMPTY = new Uint8Array(0);

export class AdminService {
  private readonly handlers: Handlers;

  constructor(private readonly opts: AdminServiceOptions) {
    this.handlers = this.createHandlers();
  }

  /** Admin.Download: the download command, authorized and audited like any other, with its files streamed. */
  async download(peer: PeerIdentity, req: AdminRequestWire, write: (p: DownloadPieceWire) => Promise<void>): Promise<void> {
    if (req.command !== 'download')
      throw new AdminError('unknown_command', `Admin.Download serves the download command, not "${req.command}"`);
    const reply = await this.handle(peer, req, write);
    if (!reply.ok) throw new AdminError(reply.failure.code, reply.failure.message);
  }

  /** Admin.Upload: submit with its job folder streamed (any size up to maxJobBytes, bounded memory). */
  async upload(peer: PeerIdentity, req: AdminRequestWire, data: AsyncIterable<Uint8Array>): Promise<AdminReplyWire> {
    const r =
      req.command === 'submit'
        ? await this.handle(peer, req, undefined, data)
        : {
            ok: false as const,
            failure: { code: 'unknown_command' as const, message: `Admin.Upload serves the submit command, not "${req.command}"` },
          };
    return r.ok ? { ok: true, json: JSON.stringify(r.json), blob: EMPTY } : { ok: false, json: JSON.stringify(r.failure), blob: EMPTY };
  }

  /** Admin.Command: one command, answered on the wire. */
  async command(peer: PeerIdentity, req: AdminRequestWire): Promise<AdminReplyWire> {
    const r = await this.handle(peer, req);
    return r.ok ? { ok: true, json: JSON.stringify(r.json), blob: EMPTY } : { ok: false, json: JSON.stringify(r.failure), blob: EMPTY };
  }

  private async handle(
    peer: PeerIdentity,
    req: AdminRequestWire,
    write?: (p: DownloadPieceWire) => Promise<void>,
    upload?: AsyncIterable<Uint8Array>,
  ): Promise<{ ok: true; json: unknown } | { ok: false; failure: { code: AdminError['code']; message: string } }> {
    const { store } = this.opts;
    const command = req.command;
    const argsText = req.args_json || '{}';
    const audit = (role: string, allowed: boolean, outcome: string): void =>
      store.audit({
        user: peer.name,
        org: peer.org,
        role,
        command,
        args: argsText.slice(0, 2000),
        allowed,
        outcome: outcome.slice(0, 2000),
      });
    if (!isRole(peer.kind)) {
      const why = `certificate of ${peer.name} is a ${peer.kind} certificate, not an admin's`;
      audit(peer.kind, false, why);
      return { ok: false, failure: { code: 'not_admin', message: why } };
    }
    const user: AdminUser = { name: peer.name, org: peer.org, role: peer.kind };
    let allowed = true;
    try {
      if (!isAdminCommand(command))
        throw new AdminError('unknown_command', `unknown command "${command}" (known: ${ADMIN_COMMANDS.join(', ')})`);
      let raw: unknown;
      try {
        raw = JSON.parse(argsText);
      } catch {
        throw new AdminError('bad_arguments', 'arguments are not valid JSON');
      }
      const parsed = ADMIN_COMMAND_TABLE[command].args.safeParse(raw);
      if (!parsed.success) throw new AdminError('bad_arguments', `${command}: bad arguments: ${describeZodError(parsed.error)}`);
      const check = (t: Target): void => {
        const denied = authorize(user, command, t);
        if (denied) {
          allowed = false;
          throw new AdminError('denied', `permission denied: ${denied}`);
        }
      };
      const run = this.handlers[command] as (c: Call<AdminCommand>) => unknown;
      const json = await run({ args: parsed.data, blob: req.blob, user, check, write, upload });
      audit(user.role, true, 'ok');
      return { ok: true, json };
    } catch (e) {
      const failure =
        e instanceof AdminError
          ? e.toWire()
          : e instanceof BundleError || e instanceof JobConfigError
            ? { code: 'bad_job' as const, message: e.message }
            : e instanceof DiskSpaceError
              ? { code: 'no_space' as const, message: e.message }
              : { code: 'internal' as const, message: `internal error: ${(e as Error).message}` };
      audit(user.role, allowed, failure.message);
      return { ok: false, failure };
    }
  }

  private job(id: string): JobRecord {
    const j = this.opts.store.get(id);
    if (!j) throw new AdminError('not_found', `no job ${id}`);
    return j;
  }

  private createHandlers(): Handlers {
    const { store, scheduler, sessions, log } = this.opts;
    return {
      submit: async ({ blob, upload, user, check }) => {
        check({});
        const incoming = join(this.opts.scheduler.jobDir(`.incoming-${randomBytes(6).toString('hex')}`));
        try {
          const app = join(incoming, 'app');
          const { maxJobBytes, minFreeBytes } = this.opts;
          const config = upload
            ? await receiveJobStream(upload, app, {
                maxBytes: maxJobBytes,
                limitName: "the server's maxJobBytes",
                ...(minFreeBytes !== undefined && { minFreeBytes }),
              })
            : unpackJob(blob, app, maxJobBytes);
          const id = `${config.name}-${randomBytes(4).toString('hex')}`;
          renameSync(incoming, scheduler.jobDir(id));
          store.create({ id, name: config.name, submitter: user.name, submitterOrg: user.org });
          log.info({ job: id, by: user.name }, 'job submitted');
          scheduler.schedule();
          return { jobId: id };
        } finally {
          rmSync(incoming, { recursive: true, force: true });
        }
      },
      list: ({ check }) => {
        check({});
        return store.list().map(({ result: _r, ...j }) => j);
      },
      status: ({ args, check }) => {
        check({});
        const j = this.job(args.job);
        return {
          ...j,
          result: j.result as AdminReply<'status'>['result'],
          events: store.events(args.job),
          waiting: this.opts.scheduler.waitingReason(args.job),
          progress: this.opts.scheduler.progress(args.job),
        };
      },
      sites: ({ check }) => {
        check({});
        return sessions.list();
      },
      metrics: async ({ args, check }) => {
        check({});
        this.job(args.job);
        const after = args.after ?? 0;
        const limit = args.limit ?? 10_000;
        // a finished job gains no rows: answer at once
        const wait = FINAL_STATES.includes(this.job(args.job).state) ? 0 : (args.waitMs ?? 0);
        const rows = await store.tracking.waitForRows(args.job, after, wait, limit);
        return { jobId: args.job, state: this.job(args.job).state, rows, lastId: rows.length ? rows[rows.length - 1]!.id : after };
      },
      audit: ({ check }) => {
        check({});
        return store.auditLog();
      },
      abort: ({ args, user, check }) => {
        const j = this.job(args.job);
        check({ job: j });
        const reason = `aborted by ${user.name}`;
        if (j.state === 'SUBMITTED') store.transition(args.job, 'ABORTED', reason);
        else if (j.state === 'RUNNING') scheduler.abort(args.job, reason);
        else throw new AdminError('conflict', `job ${args.job} is already ${j.state}`);
        return { jobId: args.job, aborted: true as const };
      },
      requeue: ({ args, user, check }) => {
        const j = this.job(args.job);
        check({ job: j });
        if (!['ABORTED_BY_RESTART', 'FAILED', 'ABORTED'].includes(j.state))
          throw new AdminError(
            'conflict',
            `job ${args.job} is ${j.state}; only ABORTED_BY_RESTART, FAILED or ABORTED jobs can be requeued`,
          );
        rmSync(join(scheduler.jobDir(args.job), 'workspace'), { recursive: true, force: true });
        store.tracking.deleteJob(args.job);
        store.transition(args.job, 'SUBMITTED', `requeued by ${user.name}`);
        scheduler.schedule();
        return { jobId: args.job, state: 'SUBMITTED' as const };
      },
      download: async ({ args, check, write }) => {
        const j = this.job(args.job);
        check({ job: j });
        const root = join(scheduler.jobDir(args.job), 'workspace', 'server');
        if (!existsSync(root)) throw new AdminError('not_found', `job ${args.job} (${j.state}) has no results yet`);
        // over Admin.Download the files stream (any size); a plain command gets the list only
        const files = write ? await sendResults(root, write) : await listResults(root);
        return { jobId: args.job, state: j.state, files };
      },
      'dashboard-token': ({ user, check }) => {
        check({});
        const { token, expiresAt } = this.opts.dashboard.issue(user);
        return { token, expiresAt, user: user.name, role: user.role, dashboardPort: this.opts.dashboard.dashboardPort() };
      },
      'shutdown-site': async ({ args, user, check }) => {
        const org = sessions.orgOf(args.site);
        if (org === null) throw new AdminError('not_found', `site ${args.site} is not connected`);
        check({ site: { org } });
        await sessions.send(args.site, { type: 'shutdown', reason: `requested by ${user.name}` });
        return { site: args.site, shutdown: true as const };
      },
    };
  }
}
