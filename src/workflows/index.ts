/** `flotilla/workflows`: server-side workflows (FedAvg, cyclic, cross-site evaluation) and running a job's chain of them. */
export * from './workflow.ts';
export * from './fedavg.ts';
export * from './fedavg-offload.ts';
export * from './cyclic.ts';
export * from './cross-site-eval.ts';
export * from './run-job.ts';
export * from './strategy.ts';
export * from './fedopt.ts';
export * from './scaffold.ts';
export * from './registry.ts';
export * from './swarm.ts';
