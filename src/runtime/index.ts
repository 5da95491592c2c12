/** `flotilla/runtime`: job folders and their config, the server and site runtimes that run them. */
export * from './job.ts';
export * from './job-config.ts';
export * from './job-imports.ts';
export * from './controller.ts';
export * from './executor.ts';
export * from './errors.ts';
export * from './relay.ts';
export * from './site.ts';
export * from './workspace.ts';
export * from './swarm-site.ts';
