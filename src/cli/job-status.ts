/**
 * `flotilla admin <kit> status <job>` for a person: state, progress, why a queued job waits, the
 * last round's metrics and the history, in a dozen lines (`--json` prints the raw reply).
 */
import type { AdminReply } from '../deploy/admin-commands.ts';

const time = (iso: string | null): string => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');
const num = (v: number): string => String(Number(v.toPrecision(4)));

export function formatJobStatus(s: AdminReply<'status'>): string {
  const lines = [`Job ${s.id} (${s.name}): ${s.state}`, `  submitted ${time(s.submittedAt)} by ${s.submitter}`];
  if (s.startedAt) lines.push(`  started   ${time(s.startedAt)}${s.sites.length ? ` on ${s.sites.join(', ')}` : ''}`);
  if (s.endedAt) lines.push(`  ended     ${time(s.endedAt)}`);
  if (s.waiting) lines.push(`  ${s.waiting}`);
  const p = s.progress;
  if (p) {
    const of = p.totalRounds > 0 ? ` of ${p.totalRounds}` : '';
    lines.push(`  rounds done: ${p.roundsDone}${of}`);
    if (p.current) lines.push(`  round ${p.current.round + 1}: ${p.current.done} of ${p.current.expected} results in`);
  }
  const rounds = s.result?.rounds ?? [];
  const last = rounds[rounds.length - 1];
  if (last) {
    const m = Object.entries(last.metrics)
      .map(([k, v]) => `${k} ${num(v)}`)
      .join(', ');
    lines.push(
      `  last round ${last.round + 1}/${last.totalRounds} (${last.sites.length} sites, ${last.seconds.toFixed(1)} s)${m ? `: ${m}` : ''}`,
    );
    const failed = Object.entries(last.failures);
    if (failed.length) lines.push(`  failures in that round: ${failed.map(([site, why]) => `${site}: ${why}`).join('; ')}`);
  }
  if (s.detail) lines.push(`  ${s.detail}`);
  if (s.events.length) {
    lines.push('  history:');
    for (const e of s.events) lines.push(`    ${time(e.at)}  ${e.state.padEnd(10)} ${e.detail ?? ''}`.trimEnd());
  }
  return lines.join('\n');
}
