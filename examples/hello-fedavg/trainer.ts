/**
 * The site's training script, written against the Client API as an NVFlare
 * user would: receive the global model, train a few epochs on local data,
 * send the weights back with the number of steps as the FedAvg weight.
 */
import { type ClientAPI, type TrainerFactoryContext, defineTrainer, z } from 'flotilla/client';
import { assignVariables, loadTf, readVariables } from './tfjs.ts';
import { CLASSES, FEATURES, siteData } from './data.ts';
import { HIDDEN } from './model.ts';

/** The trainer's settings (`executor.trainer.args` in job.yaml), checked before any site starts. */
const Args = z.strictObject({
  epochs: z.number().int().min(1).default(2),
  batchSize: z.number().int().min(1).default(32),
  learningRate: z.number().positive().default(0.05),
  samples: z.number().int().min(1).default(600),
});

export const createTrainer = defineTrainer({ schema: Args, create: trainer });

function trainer(ctx: TrainerFactoryContext<z.output<typeof Args>>) {
  const { epochs, batchSize: batch, learningRate: lr, samples } = ctx.args;

  return async (flare: ClientAPI) => {
    const tf = await loadTf();
    await flare.init();
    const train = siteData(ctx.siteIndex, samples, 'train');
    const val = siteData(ctx.siteIndex, 200, 'val');
    const vars = new Map<string, import('@tensorflow/tfjs').Variable>([
      ['dense1.kernel', tf.variable(tf.zeros([FEATURES, HIDDEN]))],
      ['dense1.bias', tf.variable(tf.zeros([HIDDEN]))],
      ['dense2.kernel', tf.variable(tf.zeros([HIDDEN, CLASSES]))],
      ['dense2.bias', tf.variable(tf.zeros([CLASSES]))],
    ]);
    const v = (n: string): import('@tensorflow/tfjs').Variable => vars.get(n)!;
    const logits = (x: import('@tensorflow/tfjs').Tensor): import('@tensorflow/tfjs').Tensor =>
      tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(x, v('dense1.kernel')), v('dense1.bias'))), v('dense2.kernel')), v('dense2.bias'));
    const evaluate = (d: typeof val): { loss: number; accuracy: number } =>
      tf.tidy(() => {
        const x = tf.tensor2d(d.x, [d.n, FEATURES]);
        const y = tf.oneHot(tf.tensor1d(d.y, 'int32'), CLASSES);
        const out = logits(x);
        const loss = tf.losses.softmaxCrossEntropy(y, out).dataSync()[0]!;
        const acc = tf.mean(tf.cast(tf.equal(tf.argMax(out, 1), tf.argMax(y, 1)), 'float32')).dataSync()[0]!;
        return { loss, accuracy: acc };
      });

    while (flare.isRunning()) {
      const model = await flare.receive();
      if (!model) break;
      if (flare.isSubmitModel()) {
        // cross-site evaluation asks for this site's own latest model
        await flare.send({ ...model, params: readVariables(vars), metrics: {}, meta: {} });
        continue;
      }
      if (flare.isEvaluate()) {
        const mine = readVariables(vars);
        assignVariables(vars, model.params);
        const m = evaluate(val);
        assignVariables(vars, mine);
        await flare.send({ ...model, params: new Map(), metrics: { val_loss: m.loss, val_accuracy: m.accuracy }, meta: {} });
        continue;
      }
      assignVariables(vars, model.params);
      const before = evaluate(val);
      const opt = tf.train.sgd(lr);
      let steps = 0;
      let trainLoss = 0;
      for (let e = 0; e < epochs; e++) {
        for (let b = 0; b < train.n; b += batch) {
          const end = Math.min(b + batch, train.n);
          const cost = opt.minimize(() => {
            const x = tf.tensor2d(train.x.subarray(b * FEATURES, end * FEATURES), [end - b, FEATURES]);
            const y = tf.oneHot(tf.tensor1d(train.y.subarray(b, end), 'int32'), CLASSES);
            return tf.losses.softmaxCrossEntropy<import('@tensorflow/tfjs').Tensor, import('@tensorflow/tfjs').Scalar>(y, logits(x));
          }, true);
          trainLoss = cost!.dataSync()[0]!;
          cost!.dispose();
          steps++;
        }
      }
      opt.dispose();
      const after = evaluate(val);
      flare.log('train_loss', trainLoss);
      await flare.send({
        params: readVariables(vars),
        paramsType: 'FULL',
        metrics: { train_loss: trainLoss, val_loss: after.loss, val_accuracy: after.accuracy, global_val_loss: before.loss },
        meta: { NUM_STEPS_CURRENT_ROUND: steps },
        currentRound: model.currentRound,
        totalRounds: model.totalRounds,
      });
    }
  };
}
