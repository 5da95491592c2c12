/**
 * What a running federation reports about itself, for the Prometheus endpoint and the web
 * dashboard: the server (src/deploy) and the simulator feed it from the hooks the runtime already
 * has (a ServerRuntime's onTransfer and onMetric, a workflow's onRound and onProgress), and it
 * keeps the live state the dashboard shows (transfers in flight, each job's progress and
 * rounds; the metric points are the tracking store's) next to the prom-client metrics scraped from /metrics. One instance per server: its
 * own prom-client Registry, never the global one, so two servers in one process (tests) do not
 * share counters.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { isScalar } from '../client/api.ts';
import type { MetricEvent } from '../runtime/controller.ts';
import { type TransferProgress, etaSeconds } from '../streaming/index.ts';
import type { RoundSummary } from '../workflows/workflow.ts';
import type { WorkflowSpec } from '../runtime/job-config.ts';

/** What the telemetry asks its owner at scrape time. */
export interface TelemetrySources {
  /** sites with a live session now */
  connectedSites(): number;
  /** how many jobs are in each state */
  jobStates(): Record<string, number>;
}

export type Direction = 'sent' | 'received';

/** A payload transfer between the server and a site, as the dashboard lists it. */
export interface TransferView {
  job: string;
  site: string;
  /** the server's side: sent to the site, received from it */
  direction: Direction;
  bytes: number;
  total: number | null;
  seconds: number;
  bytesPerSecond: number;
  etaSeconds: number | null;
}

export interface JobProgress {
  /** rounds of every round-writing workflow of the job (0 when unknown) */
  totalRounds: number;
  roundsDone: number;
  /** the round running now: results in / expected */
  current: { round: number; done: number; expected: number } | null;
}

interface JobLive {
  name: string;
  progress: JobProgress;
  rounds: RoundSummary[];
}

interface Flight {
  job: string;
  site: string;
  direction: Direction;
  bytes: number;
  total: number | null;
  seconds: number;
  /** Date.now() of its last report: a transfer silent for STALE_MS is no longer listed */
  at: number;
}

/** Jobs whose live state is kept (the oldest is dropped first). */
const MAX_JOBS = 32;
const STALE_MS = 120_000;

/** Rounds a job's workflows will run (those with rounds: cross-site evaluation and custom workflows count none). */
export function totalRounds(workflows: readonly WorkflowSpec[]): number {
  return workflows.reduce((n, w) => n + ('rounds' in w ? w.rounds : 0), 0);
}

/** A result failure's reason as a small, fixed label set (the text names sites and sizes). */
export function failureReason(error: string): string {
  if (/timed out/i.test(error)) return 'timeout';
  if (/too large|over the limit|refused/i.test(error)) return 'too_large';
  if (/disconnected|no heartbeat|dropped|not connected/i.test(error)) return 'disconnected';
  if (/no longer needed|cancel/i.test(error)) return 'cancelled';
  if (/bad result|does not fit|mismatch|corrupt/i.test(error)) return 'bad_result';
  return 'error';
}

export class Telemetry {
  readonly registry = new Registry();
  private readonly jobs = new Map<string, JobLive>();
  private readonly flights = new Map<string, Flight>();
  private readonly listeners = new Set<(jobId: string | null) => void>();

  private readonly rounds: Counter<'job_name'>;
  private readonly roundSeconds: Histogram<'job_name'>;
  private readonly bytes: Counter<'site' | 'direction'>;
  private readonly failures: Counter<'reason'>;
  private readonly metricsLogged: Counter<'job_name'>;
  /** dp_epsilon, dp_delta: what a site's dp_gaussian filter reports after each release */
  private readonly privacy: ReadonlyMap<string, Gauge<'job_name' | 'site'>>;

  constructor(sources: TelemetrySources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.rounds = new Counter({
      name: 'flotilla_rounds_completed_total',
      help: 'training rounds completed, by job name',
      labelNames: ['job_name'],
      registers,
    });
    this.roundSeconds = new Histogram({
      name: 'flotilla_round_duration_seconds',
      help: 'duration of a completed round (task sent to aggregate written), by job name',
      labelNames: ['job_name'],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    });
    this.bytes = new Counter({
      name: 'flotilla_transfer_bytes_total',
      help: "model payload bytes between the server and each site (direction: the server's side, sent or received)",
      labelNames: ['site', 'direction'],
      registers,
    });
    this.failures = new Counter({
      name: 'flotilla_result_failures_total',
      help: "sites' task results that failed in a completed round, by reason",
      labelNames: ['reason'],
      registers,
    });
    this.metricsLogged = new Counter({
      name: 'flotilla_logged_metrics_total',
      help: 'values sites logged with flare.log(), by job name',
      labelNames: ['job_name'],
      registers,
    });
    this.privacy = new Map(
      (['epsilon', 'delta'] as const).map((k) => [
        `dp_${k}`,
        new Gauge({
          name: `flotilla_dp_${k}`,
          help: `the ${k === 'epsilon' ? 'ε' : 'δ'} of (ε, δ)-DP a site has spent so far in a job, as its dp_gaussian filter reports after each release`,
          labelNames: ['job_name', 'site'],
          registers,
        }),
      ]),
    );
    const flights = (): Flight[] => this.inFlight();
    new Gauge({
      name: 'flotilla_transfers_in_flight',
      help: 'payload transfers under way, by direction',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        for (const d of ['sent', 'received'] as const) this.set({ direction: d }, flights().filter((f) => f.direction === d).length);
      },
    });
    new Gauge({
      name: 'flotilla_transfer_throughput_bytes_per_second',
      help: 'summed average rate of the transfers under way, by direction',
      labelNames: ['direction'],
      registers,
      collect() {
        this.reset();
        for (const d of ['sent', 'received'] as const)
          this.set(
            { direction: d },
            flights()
              .filter((f) => f.direction === d)
              .reduce((s, f) => s + f.bytes / Math.max(f.seconds, 1e-3), 0),
          );
      },
    });
    new Gauge({
      name: 'flotilla_connected_sites',
      help: 'sites with a live session',
      registers,
      collect() {
        this.set(sources.connectedSites());
      },
    });
    new Gauge({
      name: 'flotilla_jobs',
      help: 'jobs in the job store, by state',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const [state, n] of Object.entries(sources.jobStates())) this.set({ state }, n);
      },
    });
  }

  /** The Prometheus text exposition of every metric. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /** Called when anything a view shows changed (null: not one job's). */
  onChange(fn: (jobId: string | null) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private changed(jobId: string | null): void {
    for (const l of this.listeners) l(jobId);
  }

  private live(jobId: string, name = jobId): JobLive {
    let j = this.jobs.get(jobId);
    if (!j) {
      j = { name, progress: { totalRounds: 0, roundsDone: 0, current: null }, rounds: [] };
      this.jobs.set(jobId, j);
      if (this.jobs.size > MAX_JOBS) this.jobs.delete(this.jobs.keys().next().value!);
    }
    return j;
  }

  jobStarted(jobId: string, name: string, totalRounds: number): void {
    const j = this.live(jobId, name);
    j.name = name;
    j.progress = { totalRounds, roundsDone: 0, current: null };
    j.rounds = [];
    this.changed(jobId);
  }

  jobEnded(jobId: string): void {
    for (const [k, f] of this.flights) if (f.job === jobId) this.flights.delete(k);
    const j = this.jobs.get(jobId);
    if (j) j.progress.current = null;
    this.changed(jobId);
  }

  /** Results arriving within a round (a workflow's onProgress). */
  roundProgress(jobId: string, p: { round: number; done: number; expected: number }): void {
    this.live(jobId).progress.current = { ...p };
    this.changed(jobId);
  }

  /** A round completed (a workflow's onRound): counted, timed, its failures counted. */
  roundCompleted(jobId: string, s: RoundSummary): void {
    const j = this.live(jobId);
    this.rounds.inc({ job_name: j.name });
    this.roundSeconds.observe({ job_name: j.name }, s.seconds);
    for (const error of Object.values(s.failures)) this.failures.inc({ reason: failureReason(error) });
    j.rounds.push(s);
    j.progress.roundsDone = j.rounds.length;
    j.progress.totalRounds = Math.max(j.progress.totalRounds, j.progress.roundsDone);
    j.progress.current = null;
    this.changed(jobId);
  }

  /** A value a site logged with flare.log() (a ServerRuntime's onMetric): counted (the tracking store keeps it). */
  metricLogged(jobId: string, m: MetricEvent): void {
    if (!isScalar(m)) return; // texts and params: the tracking store has them
    const j = this.live(jobId);
    this.metricsLogged.inc({ job_name: j.name });
    this.privacy.get(m.key)?.set({ job_name: j.name, site: m.site }, m.value);
  }

  /** A transfer's progress report (a ServerRuntime's channel onTransfer): bytes counted as they move. */
  transfer(jobId: string, t: TransferProgress): void {
    const direction: Direction = t.direction === 'send' ? 'sent' : 'received';
    const key = `${jobId}\0${t.peer}\0${t.stream}\0${direction}`;
    const before = this.flights.get(key)?.bytes ?? 0;
    if (t.bytes > before) this.bytes.inc({ site: t.peer, direction }, t.bytes - before);
    if (t.done) this.flights.delete(key);
    else
      this.flights.set(key, {
        job: jobId,
        site: t.peer,
        direction,
        bytes: t.bytes,
        total: t.total ?? null,
        seconds: t.seconds,
        at: Date.now(),
      });
  }

  private inFlight(): Flight[] {
    const now = Date.now();
    for (const [k, f] of this.flights) if (now - f.at > STALE_MS) this.flights.delete(k);
    return [...this.flights.values()];
  }

  transfers(): TransferView[] {
    return this.inFlight().map((f) => {
      const eta = f.total === null ? undefined : etaSeconds({ bytes: f.bytes, total: f.total, seconds: f.seconds });
      return {
        job: f.job,
        site: f.site,
        direction: f.direction,
        bytes: f.bytes,
        total: f.total,
        seconds: f.seconds,
        bytesPerSecond: f.bytes / Math.max(f.seconds, 1e-3),
        etaSeconds: eta ?? null,
      };
    });
  }

  progress(jobId: string): JobProgress | null {
    const j = this.jobs.get(jobId);
    return j ? { ...j.progress, ...(j.progress.current && { current: { ...j.progress.current } }) } : null;
  }

  roundSummaries(jobId: string): RoundSummary[] {
    return [...(this.jobs.get(jobId)?.rounds ?? [])];
  }
}
