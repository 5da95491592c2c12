// The page's shared state: the signed-in token and user, what the live stream last sent, the plots.

export const TOKEN_KEY = 'flotilla.dashboard.token';
export const main = document.getElementById('main');
export const state = {
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
