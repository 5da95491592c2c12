// Signing in with a dashboard token (kept in this tab's sessionStorage, sent as a bearer header, never a cookie).
import { TOKEN_KEY, main, state } from './state.js';
import { h } from './dom.js';
import { api, closeStream } from './api.js';
import { show } from './app.js';

// ---- sign-in ---------------------------------------------------------------------------------
export function signOut(reason) {
  closeStream();
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  document.getElementById('who').textContent = '';
  document.getElementById('signout').hidden = true;
  renderSignIn(reason);
}

export function renderSignIn(reason) {
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

export async function signIn(token) {
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
