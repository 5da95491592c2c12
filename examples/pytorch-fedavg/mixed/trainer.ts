/** The TypeScript (tfjs) sites run hello-fedavg's trainer unchanged. */
export { createTrainer } from '../../hello-fedavg/trainer.ts';
