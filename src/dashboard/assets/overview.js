// The overview page: jobs with state and progress, sites with their last heartbeat, transfers in flight, the audit log.
import { main, state } from './state.js';
import { h, bytes, duration, ago, time, bar, progressCell, table } from './dom.js';
import { api } from './api.js';

// ---- overview --------------------------------------------------------------------------------
export function renderOverviewPage() {
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

export function renderOverview() {
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

export function renderAudit(entries) {
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
