/** The initial global model shared by the TypeScript and the PyTorch sites. */
export { initialModel } from '../../hello-fedavg/model.ts';
