// The dashboard's JSON API and its live updates (server-sent events read through fetch, which can send the token).
import { state } from './state.js';
import { signOut } from './signin.js';
import { onEvent } from './app.js';

// ---- the API ---------------------------------------------------------------------------------
export async function api(path, init) {
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
export function openStream(jobId) {
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
export function closeStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}
