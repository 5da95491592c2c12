// Worker threads do not inherit the parent's --import hooks: register tsx, then load the TypeScript entry.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.entry);
