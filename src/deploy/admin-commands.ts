/**
 * The admin protocol as one table: every command's name, arguments (zod), reply (zod), the
 * operand the CLI takes and the authorization policy it is checked against. The server
 * (admin-service.ts) parses arguments and authorizes with it, the admin client (src/admin) parses
 * replies with it, and the CLI builds its help and its argument from it, so the three cannot
 * disagree. Failures travel as `{ code, message }` and surface as an `AdminError` with that code.
 */
import { z } from 'zod';
import { RoundSummarySchema } from '../workflows/workflow.ts';
import { TrackedRowSchema } from '../tracking/types.ts';
import { type AuditEntry as AuditRecord, JOB_STATES } from './job-store.ts';

/** Who may run a command (the rules are src/deploy/authz.ts). */
export type AdminPolicy = 'view' | 'submit' | 'job-owner' | 'site-org' | 'project-admin';

const JobId = z.string().min(1).max(200);
const NoArgs = z.strictObject({});
const JobArg = z.strictObject({ job: JobId });
const SiteArg = z.strictObject({ site: z.string().min(1).max(64) });
const State = z.enum(JOB_STATES);

export const JobSummarySchema = z.object({
  jobId: z.string(),
  job: z.string(),
  sites: z.array(z.string()),
  rounds: z.array(RoundSummarySchema),
  crossSite: z.unknown().optional(),
  seconds: z.number(),
});
export type JobSummary = z.infer<typeof JobSummarySchema>;

const JobEntry = z.object({
  id: z.string(),
  name: z.string(),
  submitter: z.string(),
  submitterOrg: z.string(),
  state: State,
  submittedAt: z.string(),
  startedAt: z.string().nullable(),
  endedAt: z.string().nullable(),
  sites: z.array(z.string()),
  detail: z.string().nullable(),
});
export type JobListEntry = z.infer<typeof JobEntry>;

const JobStatus = JobEntry.extend({
  result: JobSummarySchema.nullable(),
  /** why a queued job has not started ("waiting for 3 sites, 2 connected: site-1, site-2"); null otherwise */
  waiting: z.string().nullable().default(null),
  /** a running job's rounds: done of total, and the current round's results in of expected */
  progress: z
    .object({
      totalRounds: z.number(),
      roundsDone: z.number(),
      current: z.object({ round: z.number(), done: z.number(), expected: z.number() }).nullable(),
    })
    .nullable()
    .default(null),
  events: z.array(z.object({ at: z.string(), state: State, detail: z.string().nullable() })),
});

const SiteEntry = z.object({
  site: z.string(),
  org: z.string(),
  connectedAt: z.string(),
  lastSeenMsAgo: z.number(),
  runningJobs: z.array(z.string()),
});
export type SiteEntry = z.infer<typeof SiteEntry>;

const AuditEntry = z.object({
  at: z.string(),
  user: z.string(),
  org: z.string(),
  role: z.string(),
  command: z.string(),
  args: z.string(),
  allowed: z.boolean(),
  outcome: z.string(),
}) satisfies z.ZodType<AuditRecord>;

interface CommandSpec {
  args: z.ZodType;
  reply: z.ZodType;
  /** the CLI's positional argument, which fills the one argument (null: none) */
  operand: { name: 'job' | 'site'; what: string } | { name: 'bundle'; what: string } | null;
  policy: AdminPolicy;
  summary: string;
}

export const ADMIN_COMMAND_TABLE = {
  submit: {
    args: NoArgs,
    reply: z.object({ jobId: z.string() }),
    operand: { name: 'bundle', what: 'job folder' },
    policy: 'submit',
    summary: 'submit a job folder; prints its id',
  },
  list: { args: NoArgs, reply: z.array(JobEntry), operand: null, policy: 'view', summary: 'every job and its state' },
  status: {
    args: JobArg,
    reply: JobStatus,
    operand: { name: 'job', what: 'job id' },
    policy: 'view',
    summary: "one job's state, summary and history",
  },
  abort: {
    args: JobArg,
    reply: z.object({ jobId: z.string(), aborted: z.literal(true) }),
    operand: { name: 'job', what: 'job id' },
    policy: 'job-owner',
    summary: 'stop a queued or running job',
  },
  download: {
    args: JobArg,
    reply: z.object({ jobId: z.string(), state: State, files: z.array(z.object({ path: z.string(), size: z.number() })) }),
    operand: { name: 'job', what: 'job id' },
    policy: 'job-owner',
    summary: "fetch a job's server results (models, metrics, logs)",
  },
  sites: { args: NoArgs, reply: z.array(SiteEntry), operand: null, policy: 'view', summary: 'connected sites' },
  requeue: {
    args: JobArg,
    reply: z.object({ jobId: z.string(), state: z.literal('SUBMITTED') }),
    operand: { name: 'job', what: 'job id' },
    policy: 'job-owner',
    summary: 'run a failed, aborted or interrupted job again',
  },
  'shutdown-site': {
    args: SiteArg,
    reply: z.object({ site: z.string(), shutdown: z.literal(true) }),
    operand: { name: 'site', what: 'site name' },
    policy: 'site-org',
    summary: "stop a site's process",
  },
  metrics: {
    args: z.strictObject({
      job: JobId,
      /** rows with a larger id than this (the last reply's lastId) */
      after: z.number().int().min(0).optional(),
      limit: z.number().int().min(1).max(10_000).optional(),
      /** when there are no such rows yet, wait this long for one (long polling; --follow) */
      waitMs: z.number().int().min(0).max(30_000).optional(),
    }),
    reply: z.object({ jobId: z.string(), state: State, rows: z.array(TrackedRowSchema), lastId: z.number().int() }),
    operand: { name: 'job', what: 'job id' },
    policy: 'view',
    summary: "what a job's sites logged (scalars, texts, params) and its rounds' metrics; --follow, --csv",
  },
  audit: {
    args: NoArgs,
    reply: z.array(AuditEntry),
    operand: null,
    policy: 'project-admin',
    summary: 'who ran which command, allowed or not',
  },
  'dashboard-token': {
    args: NoArgs,
    reply: z.object({
      token: z.string(),
      expiresAt: z.string(),
      user: z.string(),
      role: z.string(),
      /** the dashboard's HTTPS port on the server's host (null: the server serves no dashboard) */
      dashboardPort: z.number().int().nullable(),
    }),
    operand: null,
    policy: 'view',
    summary: 'a sign-in token for the web dashboard, acting with your role (12 h)',
  },
} as const satisfies Record<string, CommandSpec>;

export type AdminCommand = keyof typeof ADMIN_COMMAND_TABLE;
export const ADMIN_COMMANDS = Object.keys(ADMIN_COMMAND_TABLE) as AdminCommand[];
export type AdminArgs<C extends AdminCommand> = z.infer<(typeof ADMIN_COMMAND_TABLE)[C]['args']>;
export type AdminReply<C extends AdminCommand> = z.infer<(typeof ADMIN_COMMAND_TABLE)[C]['reply']>;

export function isAdminCommand(s: string): s is AdminCommand {
  return Object.hasOwn(ADMIN_COMMAND_TABLE, s);
}

/** Why an admin command failed, as a value both ends agree on. */
export const ADMIN_ERROR_CODES = [
  'unknown_command',
  'bad_arguments',
  'not_admin',
  'denied',
  'not_found',
  'conflict',
  'bad_job',
  'no_space',
  'bad_reply',
  'internal',
] as const;
export type AdminErrorCode = (typeof ADMIN_ERROR_CODES)[number];

export const AdminFailureSchema = z.strictObject({ code: z.enum(ADMIN_ERROR_CODES), message: z.string() });
export type AdminFailure = z.infer<typeof AdminFailureSchema>;

export class AdminError extends Error {
  override readonly name = 'AdminError';
  constructor(
    readonly code: AdminErrorCode,
    message: string,
  ) {
    super(message);
  }

  toWire(): AdminFailure {
    return { code: this.code, message: this.message };
  }
}
