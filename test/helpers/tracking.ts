/** What TensorBoard's reader (test/helpers/tb_read.py) should find for a job's tracked rows. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { exportStep, exportTag, siteLabel, type TrackedRow } from '../../src/tracking/index.ts';
import { PYTHON } from './python.ts';
import { repo } from './federation.ts';

export type TbRuns = Record<string, { scalars: Record<string, [number, number][]>; texts: Record<string, [number, string][]> }>;

/** The runs, tags, steps and values the exporter writes for these rows (scalars as float32, TensorBoard's simple_value). */
export function tensorboardExpected(rows: readonly TrackedRow[]): TbRuns {
  const out: TbRuns = {};
  for (const r of rows) {
    const run = (out[siteLabel(r.site)] ??= { scalars: {}, texts: {} });
    if (r.kind === 'scalar') (run.scalars[exportTag(r)] ??= []).push([exportStep(r), Math.fround(r.value!)]);
    else (run.texts[exportTag(r)] ??= []).push([exportStep(r), r.text ?? '']);
  }
  return out;
}

/** The runs as TensorBoard's own EventAccumulator reads them from a log dir. */
export function tensorboardRead(logdir: string): TbRuns {
  return JSON.parse(execFileSync(PYTHON, [join(repo, 'test/helpers/tb_read.py'), logdir], { encoding: 'utf8' })) as TbRuns;
}
