/** Terminal feedback while an admin command waits: a redrawn wait line, a download bar (stderr, terminals only). */
import { Presets, SingleBar } from 'cli-progress';
import type { DownloadProgress } from '../deploy/download.ts';

/**
 * A line on stderr while an admin command waits longer than a second (a large job folder being
 * sent, a busy or distant server): what it waits for and for how long, redrawn; only on a
 * terminal, cleared when the reply comes.
 */
export async function withWaitLine<T>(what: string, run: () => Promise<T>): Promise<T> {
  if (!process.stderr.isTTY || process.env.CI) return run();
  const started = performance.now();
  const bar = new SingleBar({ format: ' {what} … {secs} s', hideCursor: true, clearOnComplete: true, stream: process.stderr });
  let shown = false;
  const timer = setInterval(() => {
    if (performance.now() - started < 1000) return;
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    if (!shown) bar.start(1, 0, { what, secs });
    else bar.update(0, { what, secs });
    shown = true;
  }, 200);
  try {
    return await run();
  } finally {
    clearInterval(timer);
    if (shown) bar.stop();
  }
}

/**
 * A progress bar (bytes, rate, ETA) on stderr while a download runs, when stderr is a terminal;
 * nothing otherwise (CI logs and pipes get the final line only).
 */
export async function withDownloadBar<T>(run: (onProgress?: (p: DownloadProgress) => void) => Promise<T>): Promise<T> {
  if (!process.stderr.isTTY || process.env.CI) return run();
  const bar = new SingleBar(
    {
      format: ' download [{bar}] {percentage}% | {done} of {all} | {rate}/s | ETA {eta_formatted} | {file}',
      hideCursor: true,
      clearOnComplete: true,
      stream: process.stderr,
      etaBuffer: 50,
    },
    Presets.shades_classic,
  );
  const mb = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MB`;
  const started = performance.now();
  let begun = false;
  try {
    return await run((p) => {
      const payload = {
        done: mb(p.bytes),
        all: mb(p.total),
        rate: mb(p.bytes / Math.max((performance.now() - started) / 1000, 1e-3)),
        file: p.file,
      };
      if (!begun) {
        bar.start(Math.max(p.total, 1), p.bytes, payload);
        begun = true;
      } else bar.update(p.bytes, payload);
    });
  } finally {
    if (begun) bar.stop();
  }
}
