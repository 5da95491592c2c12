// The Flotilla dashboard page: plain browser JavaScript, no build step. It signs in with a token
// (kept in this tab's sessionStorage, sent as a bearer header, never a cookie), reads live updates
// from /api/events (server-sent events read through fetch, which can send the header), and draws
// per-site metric plots with uPlot. Every text reaches the page through textContent.
'use strict';
(() => {
  const TOKEN_KEY = 'flotilla.dashboard.token';
  const COLORS = ['#2563eb', '#db2777', '#16a34a', '#ea580c', '#7c3aed', '#0891b2', '#ca8a04', '#dc2626', '#4b5563', '#0d9488'];
  const main = document.getElementById('main');
  const state = {
    token: null,
    me: null,
    overview: null,
    job: null,
    points: [],
    logs: [],
    stream: null,
    charts: new Map(),
    auditTimer: null,
  };

  // ---- small helpers -------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') el.textContent = String(v);
      else if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat())
      if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }
  const MB = 1024 * 1024;
  function bytes(n) {
    if (n === null || n === undefined) return '–';
    if (n >= 1024 * MB) return `${(n / 1024 / MB).toFixed(2)} GB`;
    if (n >= MB) return `${(n / MB).toFixed(1)} MB`;
    if (n >= 1024) return `${(n / 1024).toFixed(1)} kB`;
    return `${n} B`;
  }
  function duration(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return '–';
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 90) return `${s.toFixed(1)} s`;
    if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }
  function ago(iso) {
    if (!iso) return '–';
    return `${duration(Math.max(0, (Date.now() - Date.parse(iso)) / 1000))} ago`;
  }
  function time(iso) {
    return iso ? new Date(iso).toLocaleString() : '–';
  }
  function num(v) {
    if (typeof v !== 'number') return String(v);
    return Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toPrecision(4);
  }
  function toast(text, bad) {
    const t = document.getElementById('toast');
    t.textContent = text;
    t.className = bad ? 'toast bad' : 'toast';
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.hidden = true), 6000);
  }
  function bar(fraction) {
    const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
    return h('div', { class: 'bar' }, h('span', { style: `width:${pct.toFixed(1)}%` }));
  }
  function progressOf(j) {
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
  function progressCell(j) {
    const p = progressOf(j);
    return p
      ? h('div', { class: 'progress' }, bar(p.fraction), h('span', { class: 'label', text: p.label }))
      : h('span', { class: 'muted', text: '–' });
  }
  function table(headers, rows, empty) {
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

  // ---- the API ---------------------------------------------------------------------------------
  async function api(path, init) {
    const r = await fetch(path, { ...init, headers: { ...(init && init.headers), authorization: `Bearer ${state.token}` } });
    const body = r.headers.get('content-type')?.startsWith('application/json') ? await r.json() : null;
    if (r.status === 401) {
      signOut(body && body.error);
      throw new Error(body ? body.error : 'signed out');
    }
    if (!r.ok) throw new Error(body && body.error ? body.error : `${r.status} ${r.statusText}`);
    return body;
  }

  /** Server-sent events over fetch (EventSource cannot send the token header); reconnects after a drop. */
  function openStream(jobId) {
    closeStream();
    const ctl = new AbortController();
    state.stream = ctl;
    const live = document.getElementById('live');
    (async () => {
      while (!ctl.signal.aborted) {
        try {
          const r = await fetch(`/api/events${jobId ? `?job=${encodeURIComponent(jobId)}` : ''}`, {
            headers: { authorization: `Bearer ${state.token}` },
            signal: ctl.signal,
          });
          if (r.status === 401) return signOut('your token is no longer valid');
          if (!r.ok || !r.body) throw new Error(`${r.status}`);
          live.textContent = 'live';
          live.className = 'live on';
          const reader = r.body.getReader();
          const dec = new TextDecoder();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, i);
              buf = buf.slice(i + 2);
              let event = 'message';
              const data = [];
              for (const line of block.split('\n')) {
                if (line.startsWith('event: ')) event = line.slice(7);
                else if (line.startsWith('data: ')) data.push(line.slice(6));
              }
              if (data.length) onEvent(event, JSON.parse(data.join('\n')));
            }
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
        }
        live.textContent = 'reconnecting';
        live.className = 'live off';
        await new Promise((r) => setTimeout(r, 2000));
      }
    })();
  }
  function closeStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  function onEvent(event, data) {
    if (event === 'overview') {
      state.overview = data;
      if (route().page === 'overview') renderOverview();
    } else if (event === 'job') {
      state.job = data;
      renderJobHeader();
      renderParams();
      renderRounds();
    } else if (event === 'points') {
      state.points.push(...data.points);
      state.notes.push(...data.notes);
      renderCharts();
      renderNotes();
    } else if (event === 'logs') {
      state.logs = data.lines;
      renderLogs();
    } else if (event === 'signed-out') signOut(data.error);
  }

  // ---- sign-in ---------------------------------------------------------------------------------
  function signOut(reason) {
    closeStream();
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.me = null;
    document.getElementById('who').textContent = '';
    document.getElementById('signout').hidden = true;
    renderSignIn(reason);
  }

  function renderSignIn(reason) {
    const input = h('textarea', { id: 'token', placeholder: 'flt1.…', spellcheck: 'false', 'aria-label': 'dashboard token' });
    const form = h(
      'form',
      {
        class: 'card signin',
        onsubmit: (e) => {
          e.preventDefault();
          void signIn(input.value.trim());
        },
      },
      h('h1', { text: 'Sign in' }),
      h(
        'p',
        {},
        'Paste a token made with ',
        h('code', { text: 'flotilla admin <your-kit> dashboard-token' }),
        '. The dashboard acts with the role of that admin.',
      ),
      reason ? h('p', { class: 'error', text: reason }) : null,
      input,
      h('button', { class: 'primary', type: 'submit', id: 'signin', text: 'Sign in' }),
    );
    main.replaceChildren(form);
  }

  async function signIn(token) {
    state.token = token;
    try {
      state.me = await api('/api/me');
    } catch (e) {
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    document.getElementById('title').textContent = state.me.title;
    document.title = `${state.me.title} · Flotilla`;
    document.getElementById('who').textContent = `${state.me.user.name} · ${state.me.user.role}`;
    document.getElementById('signout').hidden = false;
    show();
  }

  // ---- routing ---------------------------------------------------------------------------------
  function route() {
    const m = /^#\/job\/(.+)$/.exec(location.hash);
    return m ? { page: 'job', id: decodeURIComponent(m[1]) } : { page: 'overview' };
  }
  function show() {
    if (!state.token) return renderSignIn();
    clearInterval(state.auditTimer);
    for (const c of state.charts.values()) c.plot.destroy();
    state.charts.clear();
    const r = route();
    if (r.page === 'job') {
      state.job = null;
      state.points = [];
      state.notes = [];
      state.logs = [];
      renderJobPage(r.id);
      openStream(r.id);
    } else {
      renderOverviewPage();
      openStream(null);
    }
  }
  window.addEventListener('hashchange', show);

  // ---- overview --------------------------------------------------------------------------------
  function renderOverviewPage() {
    main.replaceChildren(
      h('section', { class: 'card', id: 'jobs' }, h('h2', { text: 'Jobs' }), h('div', { class: 'body' })),
      h(
        'div',
        { class: 'grid2' },
        h('section', { class: 'card', id: 'sites' }, h('h2', { text: 'Sites' }), h('div', { class: 'body' })),
        h('section', { class: 'card', id: 'transfers' }, h('h2', { text: 'Transfers in flight' }), h('div', { class: 'body' })),
      ),
      h('section', { class: 'card', id: 'audit', style: 'margin-top:18px' }, h('h2', { text: 'Audit log' }), h('div', { class: 'body' })),
    );
    if (state.overview) renderOverview();
    const loadAudit = async () => {
      const body = document.querySelector('#audit .body');
      if (!body) return;
      if (state.me.may.audit) return body.replaceChildren(h('div', { class: 'empty', text: state.me.may.audit }));
      try {
        renderAudit(await api('/api/audit'));
      } catch (e) {
        body.replaceChildren(h('div', { class: 'error', text: e.message }));
      }
    };
    void loadAudit();
    state.auditTimer = setInterval(loadAudit, 5000);
  }

  function renderOverview() {
    const o = state.overview;
    const jobs = document.querySelector('#jobs .body');
    if (!o || !jobs) return;
    const sorted = [...o.jobs].reverse();
    jobs.replaceChildren(
      table(
        ['Job', 'State', 'Progress', 'Submitter', 'Submitted', 'Duration '],
        sorted.map((j) =>
          h(
            'tr',
            { 'data-job': j.id },
            h('td', {}, h('a', { href: `#/job/${encodeURIComponent(j.id)}`, text: j.name }), h('div', { class: 'muted mono', text: j.id })),
            h('td', {}, h('span', { class: `badge ${j.state}`, text: j.state })),
            h('td', {}, progressCell(j)),
            h('td', { text: j.submitter }),
            h('td', { class: 'time', text: time(j.submittedAt) }),
            h('td', {
              class: 'num',
              text: j.startedAt ? duration(((j.endedAt ? Date.parse(j.endedAt) : Date.now()) - Date.parse(j.startedAt)) / 1000) : '–',
            }),
          ),
        ),
        'No jobs yet: submit one with flotilla admin <kit> submit <job-folder>.',
      ),
    );
    document.querySelector('#sites .body').replaceChildren(
      table(
        ['Site', 'Org', 'Connection', 'Last heartbeat', 'Running'],
        o.sites.map((s) =>
          h(
            'tr',
            { 'data-site': s.site },
            h('td', { text: s.site }),
            h('td', { class: 'muted', text: s.org }),
            h('td', {}, h('span', { class: `dot ${s.state}` }), s.state),
            h('td', { text: ago(s.lastHeartbeat) }),
            h('td', { class: 'mono', text: s.runningJobs.join(', ') || '–' }),
          ),
        ),
        'No site has connected yet.',
      ),
    );
    document.querySelector('#transfers .body').replaceChildren(
      table(
        ['Site', 'Direction', 'Moved ', 'Rate ', 'ETA '],
        o.transfers.map((t) =>
          h(
            'tr',
            {},
            h('td', {}, t.site, h('div', { class: 'muted mono', text: t.job })),
            h('td', { text: t.direction === 'sent' ? '↑ to site' : '↓ from site' }),
            h(
              'td',
              { class: 'num' },
              `${bytes(t.bytes)}${t.total ? ` / ${bytes(t.total)}` : ''}`,
              t.total ? h('div', { style: 'margin-top:4px' }, bar(t.bytes / t.total)) : null,
            ),
            h('td', { class: 'num', text: `${bytes(t.bytesPerSecond)}/s` }),
            h('td', { class: 'num', text: t.etaSeconds === null ? '–' : duration(t.etaSeconds) }),
          ),
        ),
        'No model transfers in flight.',
      ),
    );
  }

  function renderAudit(entries) {
    const body = document.querySelector('#audit .body');
    if (!body) return;
    body.replaceChildren(
      table(
        ['Time', 'Admin', 'Command', 'Arguments', 'Allowed', 'Outcome'],
        [...entries]
          .reverse()
          .slice(0, 50)
          .map((a) =>
            h(
              'tr',
              {},
              h('td', { class: 'time', text: time(a.at) }),
              h('td', {}, a.user, h('div', { class: 'muted', text: `${a.role} · ${a.org}` })),
              h('td', { class: 'mono', text: a.command }),
              h('td', { class: 'mono muted', text: a.args === '{}' ? '' : a.args }),
              h('td', { class: a.allowed ? '' : 'error', text: a.allowed ? 'yes' : 'denied' }),
              h('td', { class: 'muted', text: a.outcome }),
            ),
          ),
        'Nothing audited yet.',
      ),
    );
  }

  // ---- one job ---------------------------------------------------------------------------------
  function renderJobPage(id) {
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
      h(
        'section',
        { class: 'card', id: 'notes', hidden: true },
        h('h2', { text: 'Notes logged by the sites' }),
        h('div', { class: 'body' }),
      ),
      h('section', { class: 'card', id: 'rounds' }, h('h2', { text: 'Rounds' }), h('div', { class: 'body' })),
      h('section', { class: 'card', id: 'events' }, h('h2', { text: 'History' }), h('div', { class: 'body' })),
      h('section', { class: 'card', id: 'job-logs' }, h('h2', { text: 'Server log' }), h('pre', { class: 'logs', id: 'logs' })),
    );
  }

  function renderJobHeader() {
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

  function renderParams() {
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

  function renderNotes() {
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

  async function abortJob(id) {
    if (!window.confirm(`Abort job ${id}?`)) return;
    try {
      const r = await api(`/api/jobs/${encodeURIComponent(id)}/abort`, { method: 'POST' });
      toast(r.message);
    } catch (e) {
      toast(`Refused: ${e.message}`, true);
    }
  }

  async function listFiles(id) {
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

  async function fetchFile(id, path) {
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

  function renderRounds() {
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
  function renderCharts() {
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

  function renderLogs() {
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

  window.addEventListener('resize', () => {
    for (const c of state.charts.values()) c.plot.setSize({ width: Math.max(320, c.el.clientWidth - 24), height: 220 });
  });
  document.getElementById('signout').addEventListener('click', () => signOut());

  // ---- start -----------------------------------------------------------------------------------
  // a token in the fragment (#token=…, from the CLI's link) never reaches the server's logs
  const frag = /^#token=(.+)$/.exec(location.hash);
  if (frag) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(frag[1]));
    history.replaceState(null, '', `${location.pathname}#/`);
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) void signIn(saved);
  else renderSignIn();
})();
