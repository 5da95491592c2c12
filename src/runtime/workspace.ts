/**
 * A job's server workspace: per-round global models (safetensors), metrics as
 * JSON lines, the job's summary. Layout:
 *   <dir>/server/round-<r>/global_model.safetensors
 *   <dir>/server/global_model.safetensors      (latest)
 *   <dir>/server/metrics.jsonl                 (one object per line)
 *   <dir>/server/summary.json
 * A job of several round-writing workflows (cyclic then fedavg; cross-site evaluation writes none)
 * keeps each one's checkpoints apart (forWorkflow):
 *   <dir>/server/<index>-<type>/round-<r>/global_model.safetensors
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { writeSafetensors } from '../core/safetensors.ts';
import type { TensorDict } from '../core/tensor.ts';
import { writeFileAtomic } from '../util/atomic.ts';

export class ServerWorkspace {
  readonly serverDir: string;
  /** where round folders go: serverDir, or a workflow's folder under it */
  private readonly roundsDir: string;
  constructor(
    readonly root: string,
    workflowLabel?: string,
  ) {
    this.serverDir = join(root, 'server');
    this.roundsDir = workflowLabel === undefined ? this.serverDir : join(this.serverDir, workflowLabel);
    mkdirSync(this.roundsDir, { recursive: true });
  }

  /**
   * The same workspace with round checkpoints under `server/<label>/` (label "<index>-<type>"), so
   * chained workflows (cyclic, then fedavg) do not overwrite each other's round-<r> files.
   */
  forWorkflow(label: string): ServerWorkspace {
    return new ServerWorkspace(this.root, label);
  }

  roundModelPath(round: number): string {
    return join(this.roundsDir, `round-${round}`, 'global_model.safetensors');
  }

  get globalModelPath(): string {
    return join(this.serverDir, 'global_model.safetensors');
  }

  async saveGlobalModel(round: number, model: TensorDict, metadata: Record<string, string> = {}): Promise<void> {
    const meta = { ...metadata, round: String(round) };
    mkdirSync(dirname(this.roundModelPath(round)), { recursive: true });
    await writeSafetensors(this.roundModelPath(round), model, meta);
    await writeSafetensors(this.globalModelPath, model, meta);
  }

  /** Appends one metrics record (small; a line is written whole). */
  appendMetrics(record: Record<string, unknown>): void {
    appendFileSync(join(this.serverDir, 'metrics.jsonl'), `${JSON.stringify({ time: new Date().toISOString(), ...record })}\n`);
  }

  async writeJson(name: string, value: unknown): Promise<void> {
    await writeFileAtomic(join(this.serverDir, name), `${JSON.stringify(value, null, 2)}\n`);
  }

  siteDir(site: string): string {
    const d = join(this.root, site);
    mkdirSync(d, { recursive: true });
    return d;
  }
}
