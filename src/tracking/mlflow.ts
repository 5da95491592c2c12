/**
 * MLflow exporter over MLflow's REST API (/api/2.0/mlflow): the job is an experiment named after
 * it (created if absent) holding a parent run (the job id) and a nested run per site (and one for
 * the server's round means). Scalars are metrics at step = the row's step, or its round when none
 * was given; params are params (MLflow's are write-once: a key logged again is skipped); a text
 * is a tag `text/<key>` holding its latest value (MLflow has no text metrics). Keys MLflow would
 * refuse are made acceptable (`mlflowKey`). Rows go in
 * runs/log-batch calls within MLflow's limits (1000 metrics, 100 params, 100 tags per call).
 *
 * With a `statePath`, the run ids are kept in that file (written atomically as runs are created),
 * and a job resumed after a server restart goes on in the same runs (`resume`): one run per site
 * per job, set RUNNING again. MLflow cannot delete a metric's points, so a site run that holds
 * points of the interrupted round (which runs again and logs them again) is replaced instead: the
 * old run is deleted (MLflow keeps it, restorable, out of searches and the UI) and a new one, tagged
 * `flotilla.replaces` with the old id, gets the site's rows from the store.
 */
import { readJsonFile } from '../util/json-file.ts';
import { z } from 'zod';
import { writeFileAtomic } from '../util/atomic.ts';
import type { ExportEnd } from './exporter.ts';
import type { TrackingExporter } from './exporter.ts';
import { mlflowUriProblem } from './mlflow-uri.ts';
import { exportStep } from './tensorboard.ts';
import { type TrackedRow, siteLabel } from './types.ts';

const MAX_METRICS = 1000;
const MAX_PARAMS = 100;
const MAX_TAGS = 100;
const MAX_TAG_CHARS = 5000;
const MAX_PARAM_CHARS = 6000;
const MAX_KEY_CHARS = 250;
/** the key of the parent run in `ids` (no site has this name: site names are DNS-like) */
const PARENT = '\u0000parent';

/**
 * A key as MLflow accepts it (mlflow/utils/validation.py): at most 250 characters of letters (any script),
 * digits, `_ - . / :` and spaces, and no path that normalizes to another (`a//b`, `./a`, `a/`,
 * `..a`). Anything else becomes `_`, so one odd key never makes the server refuse a whole batch.
 */
export function mlflowKey(key: string): string {
  const segments = (k: string): string =>
    k
      .split('/')
      .map((p) => (p === '' || p === '.' || p === '..' ? '_' : p))
      .join('/');
  let k = segments(key.replace(/[^\p{L}\p{N}_\-./: ]/gu, '_')).slice(0, MAX_KEY_CHARS);
  k = segments(k);
  if (k.length > MAX_KEY_CHARS) k = segments(`${k.slice(0, MAX_KEY_CHARS - 1)}_`);
  // MLflow also refuses any key starting with '..' ('..a')
  return k.startsWith('..') ? `_${k.slice(1)}` : k;
}

export interface MlflowOptions {
  /** the tracking server, e.g. http://127.0.0.1:5000 */
  uri: string;
  experiment: string;
  jobId: string;
  /** per request (default 30 s) */
  timeoutMs?: number;
  /** where the run ids are kept (the job's server folder: mlflow-runs.json), so that `resume` finds them */
  statePath?: string;
}

/** What `statePath` holds. */
const MlflowStateSchema = z.object({
  uri: z.string(),
  experimentId: z.string(),
  parent: z.string(),
  runs: z.record(z.string(), z.string()),
});
type MlflowState = z.infer<typeof MlflowStateSchema>;

/** The run ids a job's export left (null: none, another file, or unreadable: start afresh). */
export function readMlflowState(path: string): MlflowState | null {
  return readJsonFile(path, MlflowStateSchema);
}

export class MlflowError extends Error {
  override readonly name = 'MlflowError';
}

const RunCreated = z.object({ run: z.object({ info: z.object({ run_id: z.string() }) }) });
const RunFound = z.object({ run: z.object({ info: z.object({ run_id: z.string(), lifecycle_stage: z.string() }) }) });
const ExperimentFound = z.object({ experiment: z.object({ experiment_id: z.string() }) });
const ExperimentCreated = z.object({ experiment_id: z.string() });

interface Batch {
  metrics: { key: string; value: number; timestamp: number; step: number }[];
  params: { key: string; value: string }[];
  tags: { key: string; value: string }[];
}

export class MlflowExporter implements TrackingExporter {
  readonly name = 'mlflow';
  private experimentId: Promise<string> | null = null;
  private parent: Promise<string> | null = null;
  private readonly runs = new Map<string, Promise<string>>();
  private readonly paramsSent = new Map<string, Set<string>>();
  /** run ids as created, persisted to statePath */
  private readonly ids = new Map<string, string>();
  private saved: Promise<void> = Promise.resolve();
  /** a resume in progress: writes wait for it */
  private ready: Promise<void> = Promise.resolve();

  constructor(private readonly o: MlflowOptions) {
    const problem = mlflowUriProblem(o.uri);
    if (problem) throw new MlflowError(`uri: ${problem}`);
  }

  /** The run id of a site ('' = the server), for tests and links. */
  runId(site: string): Promise<string> | undefined {
    return this.runs.get(site);
  }

  /**
   * Goes on in the runs `statePath` names, if it names runs on this server that still exist:
   * `rows` are the job's rows in the store now, `stale` the sites whose runs may hold points the
   * store no longer has (the interrupted round's). Those sites' runs are replaced and refilled from
   * `rows`; the others are set RUNNING again and get only new rows. Call before the first write.
   */
  resume(rows: readonly TrackedRow[], stale: ReadonlySet<string>): void {
    this.ready = this.reattach(rows, stale);
    // handled here: a failure reaches the next write or close (which drop the exporter), never the process
    this.ready.catch(() => undefined);
  }

  private async reattach(rows: readonly TrackedRow[], stale: ReadonlySet<string>): Promise<void> {
    const st = this.o.statePath ? readMlflowState(this.o.statePath) : null;
    if (!st || st.uri !== this.o.uri || !(await this.active(st.parent))) return;
    this.experimentId = Promise.resolve(st.experimentId);
    this.parent = Promise.resolve(st.parent);
    this.ids.set(PARENT, st.parent);
    await this.call('runs/update', { run_id: st.parent, status: 'RUNNING' });
    for (const [site, id] of Object.entries(st.runs)) {
      const mine = rows.filter((r) => r.site === site);
      const active = await this.active(id);
      if (active && !stale.has(site)) {
        await this.call('runs/update', { run_id: id, status: 'RUNNING' });
        this.runs.set(site, Promise.resolve(id));
        this.ids.set(site, id);
        this.paramsSent.set(site, new Set(mine.filter((r) => r.kind === 'param').map((r) => mlflowKey(r.key))));
        continue;
      }
      if (active) await this.call('runs/delete', { run_id: id });
      const fresh = await this.run(site, id);
      for (const b of this.batches(site, mine)) await this.call('runs/log-batch', { run_id: fresh, ...b });
    }
    await this.save();
  }

  /** Whether a run exists and is not deleted. */
  private async active(runId: string): Promise<boolean> {
    const r = await this.call('runs/get', null, { run_id: runId }, true);
    return r !== null && parse(RunFound, r, 'runs/get').run.info.lifecycle_stage === 'active';
  }

  async write(rows: readonly TrackedRow[]): Promise<void> {
    await this.ready;
    const bySite = new Map<string, TrackedRow[]>();
    for (const r of rows) {
      const list = bySite.get(r.site) ?? [];
      bySite.set(r.site, list);
      list.push(r);
    }
    for (const [site, list] of bySite) {
      const runId = await this.run(site);
      for (const b of this.batches(site, list)) await this.call('runs/log-batch', { run_id: runId, ...b });
    }
  }

  async close(status: ExportEnd): Promise<void> {
    await this.ready;
    const ids = await Promise.all([...this.runs.values(), ...(this.parent ? [this.parent] : [])]);
    // at once: a server that stopped answering costs one timeout, not one per run
    await Promise.all(ids.map((id) => this.call('runs/update', { run_id: id, status, end_time: Date.now() })));
  }

  private batches(site: string, rows: TrackedRow[]): Batch[] {
    const sent = this.paramsSent.get(site) ?? new Set<string>();
    this.paramsSent.set(site, sent);
    const out: Batch[] = [];
    let b: Batch = { metrics: [], params: [], tags: [] };
    const texts = new Map<string, string>();
    for (const r of rows) {
      if (r.kind === 'scalar') b.metrics.push({ key: mlflowKey(r.key), value: r.value!, timestamp: r.at, step: exportStep(r) });
      else if (r.kind === 'param') {
        const key = mlflowKey(r.key);
        if (sent.has(key)) continue;
        sent.add(key);
        b.params.push({ key, value: (r.text ?? '').slice(0, MAX_PARAM_CHARS) });
      } else texts.set(mlflowKey(`text/${r.key}`), (r.text ?? '').slice(0, MAX_TAG_CHARS));
      if (b.metrics.length >= MAX_METRICS || b.params.length >= MAX_PARAMS) {
        out.push(b);
        b = { metrics: [], params: [], tags: [] };
      }
    }
    if (b.metrics.length || b.params.length) out.push(b);
    const tags = [...texts].map(([key, value]) => ({ key, value }));
    for (let i = 0; i < tags.length; i += MAX_TAGS) out.push({ metrics: [], params: [], tags: tags.slice(i, i + MAX_TAGS) });
    return out;
  }

  /** A site's run, created on first use (`replaces`: the id of the run it takes the place of). */
  private run(site: string, replaces?: string): Promise<string> {
    let r = this.runs.get(site);
    if (!r) {
      r = (async () => {
        const parent = await this.parentRun();
        const id = await this.createRun(siteLabel(site), [
          { key: 'mlflow.parentRunId', value: parent },
          { key: 'flotilla.job_id', value: this.o.jobId },
          { key: 'flotilla.site', value: siteLabel(site) },
          ...(replaces ? [{ key: 'flotilla.replaces', value: replaces }] : []),
        ]);
        this.ids.set(site, id);
        await this.save();
        return id;
      })();
      this.runs.set(site, r);
    }
    return r;
  }

  private parentRun(): Promise<string> {
    this.parent ??= (async () => {
      const id = await this.createRun(this.o.jobId, [{ key: 'flotilla.job_id', value: this.o.jobId }]);
      this.ids.set(PARENT, id);
      await this.save();
      return id;
    })();
    return this.parent;
  }

  /** Writes the run ids to statePath (in turn: the last write holds every id). */
  private async save(): Promise<void> {
    const path = this.o.statePath;
    const parent = this.ids.get(PARENT);
    if (!path || parent === undefined) return;
    const experimentId = await this.experiment();
    const runs = Object.fromEntries([...this.ids].filter(([k]) => k !== PARENT));
    const state: MlflowState = { uri: this.o.uri, experimentId, parent, runs };
    this.saved = this.saved.catch(() => undefined).then(() => writeFileAtomic(path, `${JSON.stringify(state)}\n`));
    await this.saved;
  }

  private async createRun(name: string, tags: { key: string; value: string }[]): Promise<string> {
    const experiment_id = await this.experiment();
    const r = await this.call('runs/create', { experiment_id, run_name: name, start_time: Date.now(), tags });
    return parse(RunCreated, r, 'runs/create').run.info.run_id;
  }

  private experiment(): Promise<string> {
    this.experimentId ??= (async () => {
      const found = await this.call('experiments/get-by-name', null, { experiment_name: this.o.experiment }, true);
      if (found !== null) return parse(ExperimentFound, found, 'experiments/get-by-name').experiment.experiment_id;
      try {
        return parse(ExperimentCreated, await this.call('experiments/create', { name: this.o.experiment }), 'experiments/create')
          .experiment_id;
      } catch (e) {
        // another job created it meanwhile
        const again = await this.call('experiments/get-by-name', null, { experiment_name: this.o.experiment }, true);
        if (again === null) throw e;
        return parse(ExperimentFound, again, 'experiments/get-by-name').experiment.experiment_id;
      }
    })();
    return this.experimentId;
  }

  /** One REST call; `missingOk` turns RESOURCE_DOES_NOT_EXIST into null. */
  private async call(path: string, body: object | null, query?: Record<string, string>, missingOk = false): Promise<unknown> {
    const url = new URL(`api/2.0/mlflow/${path}`, this.o.uri.endsWith('/') ? this.o.uri : `${this.o.uri}/`);
    for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, v);
    const res = await fetch(url, {
      method: body === null ? 'GET' : 'POST',
      headers: { 'content-type': 'application/json' },
      ...(body !== null && { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(this.o.timeoutMs ?? 30_000),
    });
    const text = await res.text();
    if (!res.ok) {
      if (missingOk && text.includes('RESOURCE_DOES_NOT_EXIST')) return null;
      throw new MlflowError(`MLflow ${path}: HTTP ${res.status}: ${text.slice(0, 500)}`);
    }
    try {
      return JSON.parse(text || '{}') as unknown;
    } catch {
      throw new MlflowError(`MLflow ${path}: the reply is not JSON: ${text.slice(0, 200)}`);
    }
  }
}

function parse<T>(schema: z.ZodType<T>, v: unknown, what: string): T {
  const r = schema.safeParse(v);
  if (!r.success) throw new MlflowError(`MLflow ${what}: unexpected reply ${JSON.stringify(v).slice(0, 300)}`);
  return r.data;
}
