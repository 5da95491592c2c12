/** Tracked rows as text: an aligned table for people, CSV for tools (`admin metrics`, `flotilla metrics`). */
import { type TrackedRow, siteLabel } from './types.ts';

export const CSV_HEADER = 'id,job,site,round,step,kind,key,value,time';

function csvCell(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** One CSV line per row (no header): the value column holds the number, the text, or the param's value. */
export function csvLines(rows: readonly TrackedRow[]): string[] {
  return rows.map((r) =>
    [
      String(r.id),
      csvCell(r.jobId),
      csvCell(siteLabel(r.site)),
      r.round === null ? '' : String(r.round),
      r.step === null ? '' : String(r.step),
      r.kind,
      csvCell(r.key),
      csvCell(r.kind === 'scalar' ? String(r.value) : (r.text ?? '')),
      new Date(r.at).toISOString(),
    ].join(','),
  );
}

export const TABLE_HEADER = `${'SITE'.padEnd(12)} ${'ROUND'.padStart(5)} ${'STEP'.padStart(7)} ${'KIND'.padEnd(6)} ${'KEY'.padEnd(24)} VALUE`;

/** Aligned lines (no header); rounds and steps as stored (rounds from 0, like currentRound). */
export function tableLines(rows: readonly TrackedRow[]): string[] {
  return rows.map((r) => {
    const v = r.kind === 'scalar' ? formatNumber(r.value!) : JSON.stringify(r.text ?? '').slice(0, 200);
    return `${siteLabel(r.site).padEnd(12)} ${(r.round === null ? '-' : String(r.round)).padStart(5)} ${(r.step === null ? '-' : String(r.step)).padStart(7)} ${r.kind.padEnd(6)} ${r.key.padEnd(24)} ${v}`;
  });
}

function formatNumber(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toPrecision(6);
}
