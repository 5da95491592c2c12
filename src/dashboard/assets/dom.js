// Small DOM and formatting helpers: elements built through textContent only, sizes, durations, tables.

export const COLORS = ['#2563eb', '#db2777', '#16a34a', '#ea580c', '#7c3aed', '#0891b2', '#ca8a04', '#dc2626', '#4b5563', '#0d9488'];

// ---- small helpers -------------------------------------------------------------------------
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') el.textContent = String(v);
    else if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
export const MB = 1024 * 1024;
export function bytes(n) {
  if (n === null || n === undefined) return '–';
  if (n >= 1024 * MB) return `${(n / 1024 / MB).toFixed(2)} GB`;
  if (n >= MB) return `${(n / MB).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${n} B`;
}
export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '–';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
export function ago(iso) {
  if (!iso) return '–';
  return `${duration(Math.max(0, (Date.now() - Date.parse(iso)) / 1000))} ago`;
}
export function time(iso) {
  return iso ? new Date(iso).toLocaleString() : '–';
}
export function num(v) {
  if (typeof v !== 'number') return String(v);
  return Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toPrecision(4);
}
export function toast(text, bad) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.className = bad ? 'toast bad' : 'toast';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}
export function bar(fraction) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return h('div', { class: 'bar' }, h('span', { style: `width:${pct.toFixed(1)}%` }));
}
export function progressOf(j) {
  const p = j.progress;
  if (j.state === 'FINISHED') return { fraction: 1, label: `${p ? p.roundsDone : ''} rounds`.trim() };
  if (!p || j.state !== 'RUNNING') return null;
  const cur = p.current;
  const within = cur && cur.expected ? cur.done / cur.expected : 0;
  const fraction = p.totalRounds ? (p.roundsDone + within) / p.totalRounds : 0;
  const done = `${p.roundsDone}${p.totalRounds ? ` of ${p.totalRounds}` : ''} rounds done`;
  const results = cur ? ` · round ${cur.round}: ${cur.done}/${cur.expected} results` : '';
  return { fraction, label: `${done}${results}` };
}
export function progressCell(j) {
  const p = progressOf(j);
  return p
    ? h('div', { class: 'progress' }, bar(p.fraction), h('span', { class: 'label', text: p.label }))
    : h('span', { class: 'muted', text: '–' });
}
export function table(headers, rows, empty) {
  if (!rows.length) return h('div', { class: 'empty', text: empty });
  return h(
    'table',
    {},
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headers.map((x) => h('th', { class: x.endsWith(' ') ? 'num' : undefined, text: x.trim() })),
      ),
    ),
    h('tbody', {}, rows),
  );
}
