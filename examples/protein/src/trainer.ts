/**
 * The site's training loop as a Client API trainer (NVFlare's
 * flare.init/receive/send pattern): take the global model, report how it does
 * on the shared test set, train E local epochs (optionally with the FedProx
 * proximal term anchored at the global model), send the full weights back.
 */
import type { ClientAPI, Trainer } from '../../../src/client/api.ts';
import { MetaKeys } from '../../../src/core/fl-model.ts';
import { accuracy, score } from './metrics.ts';
import { type Dataset, Mlp, type MlpConfig, classWeights, initBackend, trainSeed } from './model.ts';

export interface LocalTrainConfig {
  localEpochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  classWeighted: boolean;
  /** FedProx mu; 0 = FedAvg's plain local SGD */
  proxMu: number;
  seed: number;
}

export interface ProteinTrainerOptions {
  /** this site's training data (standardized features) */
  data: Dataset;
  /** the shared held-out set: the received global model is scored on it each round */
  evalSet?: Dataset;
  model: MlpConfig;
  train: LocalTrainConfig;
}

export function proteinTrainer(opts: ProteinTrainerOptions): Trainer {
  const { data, evalSet, model, train } = opts;
  const cw = train.classWeighted ? classWeights(data.y, model.classes) : undefined;
  return async (flare: ClientAPI) => {
    await initBackend();
    await flare.init();
    let mlp: Mlp | undefined;
    try {
      while (flare.isRunning()) {
        const task = await flare.receive();
        if (!task) break;
        if (mlp) mlp.setWeights(task.params);
        else mlp = new Mlp(model, task.params);
        const metrics: Record<string, number> = {};
        if (evalSet) {
          const s = score(evalSet.y, mlp.evaluate(evalSet).pred, model.classes);
          metrics['global_test_acc'] = s.accuracy;
          metrics['global_test_f1'] = s.macroF1;
        }
        if (flare.isEvaluate()) {
          metrics['local_acc'] = accuracy(data.y, mlp.evaluate(data).pred);
          await flare.send({ ...task, params: new Map(), metrics, meta: { [MetaKeys.numSamples]: data.n } });
          continue;
        }
        if (flare.isSubmitModel()) {
          await flare.send({ ...task, params: mlp.getWeights(), paramsType: 'FULL', metrics, meta: {} });
          continue;
        }
        const { loss, steps } = await mlp.train(data, {
          epochs: train.localEpochs,
          batchSize: train.batchSize,
          lr: train.lr,
          weightDecay: train.weightDecay,
          ...(cw && { classWeights: cw }),
          ...(train.proxMu > 0 && { proxMu: train.proxMu, proxAnchor: task.params }),
          seed: trainSeed(train.seed, flare.siteName(), task.currentRound),
        });
        metrics['train_loss'] = loss;
        flare.log('train_loss', loss, task.currentRound);
        await flare.send({
          params: mlp.getWeights(),
          paramsType: 'FULL',
          metrics,
          // FedAvg weights each site by its number of samples (McMahan et al.'s n_k)
          meta: { [MetaKeys.numSamples]: data.n, steps },
          currentRound: task.currentRound,
          totalRounds: task.totalRounds,
        });
      }
    } finally {
      mlp?.dispose();
    }
  };
}
