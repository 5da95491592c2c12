/** `flotilla/algorithms`: server optimizers (FedOpt), robust aggregation, client sampling, FedProx and SCAFFOLD math. */
export * from './fedprox.ts';
export * from './robust.ts';
export * from './sampling.ts';
export * from './scaffold.ts';
export * from './server-optimizer.ts';
export * from './tensor-io.ts';
