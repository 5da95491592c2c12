// One job's page: header and actions, parameters, notes, rounds, live per-site metric plots (uPlot), logs.
import { main, state } from './state.js';
import { COLORS, h, bytes, duration, time, num, toast, bar, progressOf, table } from './dom.js';
import { api } from './api.js';

// ---- one job ---------------------------------------------------------------------------------
export function renderJobPage(id) {
  main.replaceChildren(
    h('p', {}, h('a', { href: '#/', text: '← All jobs' })),
    h('section', { class: 'card', id: 'job-head' }, h('h1', { text: id })),
    h('div', { id: 'files' }),
    h(
      'section',
      { class: 'card', id: 'metrics' },
      h('h2', { text: 'Metrics per site' }),
      h('div', { class: 'charts' }),
      h('div', { class: 'empty', id: 'no-metrics', text: 'No metrics yet: they appear as the sites log them and rounds complete.' }),
    ),
    h('section', { class: 'card', id: 'params', hidden: true }, h('h2', { text: 'Parameters' }), h('div', { class: 'body' })),
    h('section', { class: 'card', id: 'notes', hidden: true }, h('h2', { text: 'Notes logged by the sites' }), h('div', { class: 'body' })),
    h('section', { class: 'card', id: 'rounds' }, h('h2', { text: 'Rounds' }), h('div', { class: 'body' })),
    h('section', { class: 'card', id: 'events' }, h('h2', { text: 'History' }), h('div', { class: 'body' })),
    h('section', { class: 'card', id: 'job-logs' }, h('h2', { text: 'Server log' }), h('pre', { class: 'logs', id: 'logs' })),
  );
}

export function renderJobHeader() {
  const j = state.job;
  const head = document.getElementById('job-head');
  if (!j || !head) return;
  const p = progressOf(j);
  const active = j.state === 'RUNNING' || j.state === 'SUBMITTED';
  const abortBtn = h('button', {
    class: 'danger',
    id: 'abort',
    disabled: !active,
    onclick: () => void abortJob(j.id),
    text: 'Abort job',
  });
  const dlBtn = h('button', { id: 'download', onclick: () => void listFiles(j.id), text: 'Download results' });
  head.replaceChildren(
    h('h1', {}, j.name, ' ', h('span', { class: `badge ${j.state}`, id: 'job-state', text: j.state })),
    h('div', { class: 'muted mono', text: j.id }),
    h(
      'div',
      { class: 'facts' },
      h('span', {}, 'submitted by ', h('b', { text: j.submitter }), ` (${j.submitterOrg})`),
      h('span', {}, 'sites ', h('b', { text: j.sites.join(', ') || '–' })),
      h('span', {}, 'started ', h('b', { text: time(j.startedAt) })),
      j.endedAt ? h('span', {}, 'ended ', h('b', { text: time(j.endedAt) })) : null,
    ),
    p
      ? h(
          'div',
          { class: 'progress', style: 'margin:10px 0' },
          bar(p.fraction),
          h('span', { class: 'label', id: 'job-progress', text: p.label }),
        )
      : null,
    j.detail ? h('div', { class: 'hint', text: j.detail }) : null,
    h(
      'div',
      { class: 'actions' },
      abortBtn,
      dlBtn,
      j.may.abort && active ? h('span', { class: 'hint', text: `Your role may not abort this job: ${j.may.abort}` }) : null,
    ),
  );
  document.querySelector('#events .body').replaceChildren(
    table(
      ['Time', 'State', 'Detail'],
      j.events.map((e) =>
        h(
          'tr',
          {},
          h('td', { class: 'time', text: time(e.at) }),
          h('td', {}, h('span', { class: `badge ${e.state}`, text: e.state })),
          h('td', { class: 'muted', text: e.detail || '' }),
        ),
      ),
      'No history.',
    ),
  );
}

export function renderParams() {
  const j = state.job;
  const sec = document.getElementById('params');
  if (!j || !sec) return;
  const sites = Object.keys(j.params || {}).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  sec.hidden = sites.length === 0;
  sec.querySelector('.body').replaceChildren(
    table(
      ['Site', 'Parameters'],
      sites.map((s) =>
        h(
          'tr',
          {},
          h('td', { text: s || 'server' }),
          h('td', {
            class: 'mono',
            text: Object.entries(j.params[s])
              .map(([k, v]) => `${k}=${v}`)
              .join('  '),
          }),
        ),
      ),
      '',
    ),
  );
}

export function renderNotes() {
  const sec = document.getElementById('notes');
  if (!sec) return;
  sec.hidden = state.notes.length === 0;
  sec.querySelector('.body').replaceChildren(
    table(
      ['Site', 'Round', 'Step', 'Key', 'Text'],
      state.notes
        .slice(-100)
        .reverse()
        .map((n) =>
          h(
            'tr',
            {},
            h('td', { text: n.site }),
            h('td', { text: n.round ?? '–' }),
            h('td', { text: n.step ?? '–' }),
            h('td', { class: 'mono', text: n.key }),
            h('td', { text: n.text }),
          ),
        ),
      '',
    ),
  );
}

export async function abortJob(id) {
  if (!window.confirm(`Abort job ${id}?`)) return;
  try {
    const r = await api(`/api/jobs/${encodeURIComponent(id)}/abort`, { method: 'POST' });
    toast(r.message);
  } catch (e) {
    toast(`Refused: ${e.message}`, true);
  }
}

export async function listFiles(id) {
  const box = document.getElementById('files');
  try {
    const r = await api(`/api/jobs/${encodeURIComponent(id)}/files`);
    box.className = 'card';
    box.replaceChildren(
      h('h2', { text: 'Result files' }),
      h(
        'ul',
        { class: 'files' },
        r.files.map((f) =>
          h(
            'li',
            {},
            h('a', { href: '#', onclick: (e) => (e.preventDefault(), void fetchFile(id, f.path)), text: f.path }),
            h('span', { class: 'muted', text: `  ${bytes(f.size)}` }),
          ),
        ),
      ),
    );
  } catch (e) {
    toast(`Refused: ${e.message}`, true);
  }
}

export async function fetchFile(id, path) {
  const r = await fetch(`/api/jobs/${encodeURIComponent(id)}/files/${encodeURIComponent(path)}`, {
    headers: { authorization: `Bearer ${state.token}` },
  });
  if (!r.ok) return toast(`Refused: ${(await r.json()).error}`, true);
  const url = URL.createObjectURL(await r.blob());
  const a = h('a', { href: url, download: path.split('/').pop() });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function renderRounds() {
  const j = state.job;
  const body = document.querySelector('#rounds .body');
  if (!j || !body) return;
  const keys = [...new Set(j.rounds.flatMap((r) => Object.keys(r.metrics)))].sort();
  body.replaceChildren(
    table(
      ['Round', 'Sites', ...keys.map((k) => `${k} (mean) `), 'Failures', 'Duration '],
      j.rounds.map((r) =>
        h(
          'tr',
          {},
          h('td', { text: r.workflow ? `${r.round} · ${r.workflow}` : r.round }),
          h('td', { text: r.sites.join(', ') }),
          keys.map((k) => h('td', { class: 'num', text: r.metrics[k] === undefined ? '–' : num(r.metrics[k]) })),
          h('td', {
            class: Object.keys(r.failures).length ? 'error' : 'muted',
            text:
              Object.entries(r.failures)
                .map(([s, e]) => `${s}: ${e}`)
                .join('; ') || 'none',
          }),
          h('td', { class: 'num', text: duration(r.seconds) }),
        ),
      ),
      'No round has completed yet.',
    ),
  );
}

/** One plot per metric and source; x is the step where the sites log steps, else the round; one series per site. */
export function renderCharts() {
  const box = document.querySelector('#metrics .charts');
  if (!box || typeof uPlot === 'undefined') return;
  const groups = new Map();
  for (const p of state.points) {
    const id = `${p.source}:${p.key}`;
    let g = groups.get(id);
    if (!g) groups.set(id, (g = { key: p.key, source: p.source, points: [] }));
    g.points.push(p);
  }
  document.getElementById('no-metrics').hidden = groups.size > 0;
  for (const [id, g] of [...groups].sort((a, b) => a[0].localeCompare(b[0]))) {
    const byStep = g.points.some((p) => p.step !== null);
    const xOf = (p) => (byStep ? (p.step ?? 0) : (p.round ?? 0));
    // the sites in natural order, the round's mean (the server's rows) last
    const sites = [...new Set(g.points.map((p) => p.site))].sort((a, b) =>
      a === 'mean' ? 1 : b === 'mean' ? -1 : a.localeCompare(b, undefined, { numeric: true }),
    );
    const xs = [...new Set(g.points.map(xOf))].sort((a, b) => a - b);
    const xi = new Map(xs.map((x, i) => [x, i]));
    const ys = sites.map(() => xs.map(() => null));
    for (const p of g.points) ys[sites.indexOf(p.site)][xi.get(xOf(p))] = p.value;
    const data = [xs, ...ys];
    let c = state.charts.get(id);
    if (c && c.sites.join() !== sites.join()) {
      c.plot.destroy();
      c.el.remove();
      state.charts.delete(id);
      c = undefined;
    }
    if (!c) {
      const el = h(
        'div',
        { class: 'chart', 'data-metric': g.key, 'data-source': g.source },
        h('h3', {}, g.key, ' ', h('small', { text: g.source === 'log' ? 'logged with flare.log()' : 'sent with each round’s result' })),
      );
      box.append(el);
      const width = Math.max(320, el.clientWidth - 24);
      const plot = new uPlot(
        {
          width,
          height: 220,
          scales: { x: { time: false } },
          // rounds and steps are whole numbers: no ticks between them
          axes: [
            { label: byStep ? 'step' : 'round', size: 40, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] },
            { size: 60 },
          ],
          series: [
            { label: byStep ? 'step' : 'round' },
            ...sites.map((s, i) =>
              s === 'mean'
                ? { label: 'mean', stroke: '#6b7280', width: 2, dash: [6, 4], spanGaps: true, points: { show: false } }
                : { label: s, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: true, size: 5 } },
            ),
          ],
        },
        data,
        el,
      );
      c = { plot, el, sites };
      state.charts.set(id, c);
    } else c.plot.setData(data);
    c.el.setAttribute('data-points', String(g.points.length));
  }
}

export function renderLogs() {
  const pre = document.getElementById('logs');
  if (!pre) return;
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.replaceChildren(
    ...state.logs.map((line) => {
      let o;
      try {
        o = JSON.parse(line);
      } catch {
        return h('div', { text: line });
      }
      const { time: t, level, msg, pid: _p, hostname: _h, name: _n, ...rest } = o;
      const lvl = level >= 50 ? 'error' : level >= 40 ? 'warn' : '';
      const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : '';
      return h(
        'div',
        { class: lvl },
        h('span', { class: 'time', text: `${t ? new Date(t).toLocaleTimeString() : ''} ` }),
        `${msg ?? ''}${extra}`,
      );
    }),
  );
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}
