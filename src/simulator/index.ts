/** `flotilla/simulator`: a job folder with N sites on this machine, or workflows and trainers wired in-process. */
export * from './simulator.ts';
export * from './in-process.ts';
