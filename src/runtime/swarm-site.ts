/**
 * The site side of swarm learning (src/workflows/swarm.ts): the round's aggregator is a site, and
 * these are the tasks it runs for it. They are built into every site's executor (the trainer never
 * sees them), so any job's trainer, TypeScript or Python, takes part in a swarm job unchanged.
 *
 *  - `swarm.open`: the round's global model arrives; the site opens a running weighted sum over it
 *    (in memory, WeightedAverage; or on disk in its workspace, OffloadedAverage, with `offload`).
 *  - `swarm.contribute`: one trainer's result, streamed to this site through the server; folded into
 *    the sum piece by piece as its bytes arrive, never held whole.
 *  - `swarm.finish`: the mean, streamed back: the round's global model.
 *
 * The contributions run beside the site's task queue (`SWARM_CONCURRENT_TASKS`): the aggregator
 * trains in its own round too, and the other sites' results must not wait behind its training.
 * One aggregation is open at a time per site: a new `swarm.open` (a round redone) drops the old one.
 */
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type FLModelInfo, updateWeight } from '../core/fl-model.ts';
import { fileSource } from '../core/model-source.ts';
import { writeStreamToFile } from '../core/safetensors.ts';
import { dictToStream, streamToDict } from '../core/tensor-stream.ts';
import { OffloadedAverage } from '../aggregators/offloaded-average.ts';
import { WeightedAverage } from '../aggregators/weighted-average.ts';
import type { Executor, IncomingTask, TaskOutput } from './executor.ts';

export const SwarmTasks = { open: 'swarm.open', contribute: 'swarm.contribute', finish: 'swarm.finish' } as const;

/** Task meta keys of the swarm tasks. */
export const SwarmMeta = {
  /** which aggregation a task belongs to: "<round>.<attempt>" */
  id: 'swarm_id',
  /** the trainer a contribution comes from */
  from: 'swarm_from',
  /** `swarm.open`: aggregate on disk in the site's workspace */
  offload: 'swarm_offload',
  /** `swarm.finish`'s answer: how many results and what total weight went into the mean */
  count: 'swarm_count',
  weight: 'swarm_weight',
} as const;

/** Swarm tasks run outside the one-at-a-time queue of a site (see above). */
/** A site workspace's folder of a swarm round aggregator's files (its model, staged results); removed with the aggregation. */
export const SWARM_DIR = 'swarm';

export const SWARM_CONCURRENT_TASKS: ReadonlySet<string> = new Set([SwarmTasks.contribute]);

interface Open {
  id: string;
  round: number;
  add(task: IncomingTask): Promise<void>;
  finish(): Promise<TaskOutput>;
  close(): Promise<void>;
}

function idOf(info: FLModelInfo): string {
  const id = info.meta[SwarmMeta.id];
  if (typeof id !== 'string' || id === '') throw new Error(`swarm task without meta.${SwarmMeta.id}`);
  return id;
}

/** The swarm tasks of one site; `workspace` is where an offloaded aggregation keeps its files. */
export function swarmExecutor(opts: { workspace: string }): Executor {
  let current: Open | null = null;

  const drop = async (): Promise<void> => {
    const c = current;
    current = null;
    await c?.close();
  };

  const info = (round: number, meta: FLModelInfo['meta']): FLModelInfo => ({
    paramsType: 'FULL',
    metrics: {},
    meta,
    currentRound: round,
    totalRounds: 0,
  });

  return {
    [SwarmTasks.open]: async (task) => {
      const id = idOf(task.info);
      if (!task.params) throw new Error('swarm.open carries no model');
      await drop();
      const round = task.info.currentRound;
      if (task.info.meta[SwarmMeta.offload] === true) {
        const dir = join(opts.workspace, SWARM_DIR, id);
        mkdirSync(dir, { recursive: true });
        const global = join(dir, 'global_model.safetensors');
        await writeStreamToFile(global, task.params, { durable: false });
        const agg = await OffloadedAverage.open(global, dir);
        current = {
          id,
          round,
          add: (t) => agg.add(t.params!, updateWeight(t.info), t.info.paramsType),
          async finish() {
            const out = join(dir, 'mean.safetensors');
            await agg.writeResult(out, {});
            const meta = { [SwarmMeta.count]: agg.count, [SwarmMeta.weight]: agg.totalWeight };
            const cleanup = async (): Promise<void> => {
              await agg.close().catch(() => undefined);
              await rm(dir, { recursive: true, force: true });
            };
            return { info: info(round, meta), params: (await fileSource(out)).open(), cleanup };
          },
          async close() {
            await agg.close().catch(() => undefined);
            await rm(dir, { recursive: true, force: true });
          },
        };
      } else {
        const agg = new WeightedAverage(await streamToDict(task.params), { stageDir: join(opts.workspace, SWARM_DIR, 'staging') });
        current = {
          id,
          round,
          add: (t) => agg.add(t.params!, updateWeight(t.info), t.info.paramsType),
          finish: async () => ({
            info: info(round, { [SwarmMeta.count]: agg.count, [SwarmMeta.weight]: agg.totalWeight }),
            params: dictToStream(agg.result()),
          }),
          close: async () => undefined,
        };
      }
      return { info: info(round, { [SwarmMeta.id]: id }), params: null };
    },

    [SwarmTasks.contribute]: async (task) => {
      const id = idOf(task.info);
      if (current?.id !== id) throw new Error(`swarm.contribute for aggregation ${id}, but ${current ? current.id : 'none'} is open here`);
      if (!task.params) throw new Error('swarm.contribute carries no params');
      await current.add(task);
      return { info: info(current.round, { [SwarmMeta.id]: id }), params: null };
    },

    [SwarmTasks.finish]: async (task) => {
      const id = idOf(task.info);
      const c = current;
      if (!c || c.id !== id) throw new Error(`swarm.finish for aggregation ${id}, but ${c ? c.id : 'none'} is open here`);
      current = null;
      try {
        return await c.finish();
      } catch (e) {
        await c.close();
        throw e;
      }
    },
  };
}
