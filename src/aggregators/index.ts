/** `flotilla/aggregators`: weighted averaging of updates, in memory or streamed to disk. */
export * from './weighted-average.ts';
export * from './offloaded-average.ts';
