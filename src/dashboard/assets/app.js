// The Flotilla dashboard page: plain browser JavaScript modules, no build step. It signs in with a token,
// reads live updates from /api/events and draws per-site metric plots with uPlot (docs/dashboard.md).
// Every text reaches the page through textContent.
import { TOKEN_KEY, state } from './state.js';
import { openStream } from './api.js';
import { signOut, renderSignIn, signIn } from './signin.js';
import { renderOverviewPage, renderOverview } from './overview.js';
import { renderJobPage, renderJobHeader, renderParams, renderNotes, renderRounds, renderCharts, renderLogs } from './job-page.js';

export function onEvent(event, data) {
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

// ---- routing ---------------------------------------------------------------------------------
export function route() {
  const m = /^#\/job\/(.+)$/.exec(location.hash);
  return m ? { page: 'job', id: decodeURIComponent(m[1]) } : { page: 'overview' };
}
export function show() {
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
