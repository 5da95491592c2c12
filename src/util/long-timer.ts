/**
 * Timers for durations of any length. Node's setTimeout takes at most 2^31-1 ms (24.8 days);
 * a longer delay fires after 1 ms with a warning. A long timer chains timers of at most that
 * length, so a 30-day round timeout waits 30 days.
 */
import { z } from 'zod';

export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The longest duration a configuration may name: ten years, far past any job and well inside a double's exact integers. */
export const MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600;

/** A duration in seconds in a config file: positive, finite, at most ten years. */
export const DurationSeconds = z
  .number()
  .positive()
  .max(MAX_DURATION_SECONDS, `must be at most ${MAX_DURATION_SECONDS} seconds (ten years)`);

/** The same, where 0 is allowed (a wait that may be none). */
export const DurationSecondsOrZero = z
  .number()
  .min(0)
  .max(MAX_DURATION_SECONDS, `must be at most ${MAX_DURATION_SECONDS} seconds (ten years)`);

export interface LongTimer {
  clear(): void;
  /** let the process exit while this timer waits */
  unref(): LongTimer;
}

/** Calls `fn` once after `ms` milliseconds, however long that is. */
export function setLongTimeout(fn: () => void, ms: number): LongTimer {
  const due = Date.now() + Math.max(0, ms);
  let t: NodeJS.Timeout;
  let refed = true;
  const arm = (): void => {
    const left = due - Date.now();
    t = left > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left));
    if (!refed) t.unref();
  };
  arm();
  const timer: LongTimer = {
    clear: () => clearTimeout(t),
    unref: () => {
      refed = false;
      t.unref();
      return timer;
    },
  };
  return timer;
}
