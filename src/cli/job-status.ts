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

/** One line of a followed job: what changed since the last one (state, waiting reason, round progress). */
export function progressLine(s: AdminReply<'status'>): string {
  const r = s.result?.rounds;
  const p = s.progress ?? (r?.length ? { roundsDone: r.length, totalRounds: r.length, current: null } : null);
  const rounds = p ? ` · rounds ${p.roundsDone}${p.totalRounds ? `/${p.totalRounds}` : ''}` : '';
  const current = p?.current ? ` · round ${p.current.round + 1}: ${p.current.done}/${p.current.expected} results` : '';
  return `${s.id}: ${s.state}${s.waiting ? ` (${s.waiting})` : ''}${rounds}${current}`;
}

/**
 * Polls a job's status until it reaches a final state, calling `print` with each new progress
 * line; resolves with the last status (`admin submit --wait`, `admin status --follow`).
 */
export async function followJob(
  status: () => Promise<AdminReply<'status'>>,
  isFinal: (state: string) => boolean,
  print: (line: string) => void,
  pollMs = 1000,
): Promise<AdminReply<'status'>> {
  let last = '';
  for (;;) {
    const s = await status();
    const line = progressLine(s);
    if (line !== last) print(line);
    last = line;
    if (isFinal(s.state)) return s;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
