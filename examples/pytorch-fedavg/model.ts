/** The initial global model: the same MLP as hello-fedavg (dense1.kernel [8, 32], ...), so TS and PyTorch sites can share it. */
export { initialModel } from '../hello-fedavg/model.ts';
