/**
 * The site's training loop as a Client API trainer (NVFlare's
 * flare.init/receive/send pattern): take the global model, report how it does
 * on the shared test set, train E local epochs (optionally with the FedProx
 * proximal term anchored at the global model), send the full weights back.
 */
import type { ClientAPI, Trainer } from 'flotilla/client';
import { FEDPROX_MU, proxMuOf } from 'flotilla/algorithms';
import { SCAFFOLD_PREFIX, ScaffoldMeta, clientControlUpdate, splitPrefixed, withPrefixed } from 'flotilla/algorithms';
import { MetaKeys } from 'flotilla/core';
import type { TensorDict } from 'flotilla/core';
import { tensor } from 'flotilla/core';
import { accuracy, score } from './metrics.ts';
import { type Dataset, Mlp, type MlpConfig, classWeights, initBackend, trainSeed } from './model.ts';

export interface LocalTrainConfig {
  localEpochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  classWeighted: boolean;
  /** FedProx mu when the job sends none in the task's meta (`fedprox_mu`, which wins); 0 = plain local training */
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
    // SCAFFOLD: this site's control variate cᵢ, kept across rounds (zeros before the first)
    let ci: TensorDict = new Map();
    try {
      while (flare.isRunning()) {
        const received = await flare.receive();
        if (!received) break;
        const scaffold = received.meta[ScaffoldMeta.enabled] === true;
        const { model: globalParams, extra: c } = splitPrefixed(received.params, SCAFFOLD_PREFIX.control);
        const task = { ...received, params: globalParams };
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
        const mu = received.meta[FEDPROX_MU] !== undefined ? proxMuOf(received.meta) : train.proxMu;
        const { loss, steps } = await mlp.train(data, {
          epochs: train.localEpochs,
          batchSize: train.batchSize,
          lr: train.lr,
          weightDecay: train.weightDecay,
          ...(cw && { classWeights: cw }),
          ...(mu > 0 && { proxMu: mu, proxAnchor: task.params }),
          ...(scaffold && { scaffoldCorrection: difference(c, ci) }),
          seed: trainSeed(train.seed, flare.siteName(), task.currentRound),
        });
        let params = mlp.getWeights();
        if (scaffold) {
          const u = clientControlUpdate({ ci, c, x: task.params, y: params, steps, lr: train.lr });
          ci = u.ci;
          params = withPrefixed(params, u.delta, SCAFFOLD_PREFIX.delta);
        }
        metrics['train_loss'] = loss;
        flare.log('train_loss', loss, task.currentRound);
        await flare.send({
          params,
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

/** c − cᵢ per tensor of c (cᵢ missing: zeros). */
function difference(c: TensorDict, ci: TensorDict): TensorDict {
  const out: TensorDict = new Map();
  for (const [name, t] of c) {
    const a = t.data as Float32Array;
    const b = ci.get(name)?.data as Float32Array | undefined;
    out.set(
      name,
      tensor(
        'F32',
        t.shape,
        a.map((v, i) => v - (b ? b[i]! : 0)),
      ),
    );
  }
  return out;
}
