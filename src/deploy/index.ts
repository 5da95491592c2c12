/** `flotilla/deploy`: the federation server and site, job bundles and store, result download, POC mode. */
export * from './server.ts';
export * from './site.ts';
export * from './job-bundle.ts';
export * from './job-store.ts';
export * from './download.ts';
export * from './authz.ts';
export * from './poc.ts';
