/**
 * SFT with a server optimizer: the federation of experiment.ts (same clients, trainer, seed,
 * rounds × local steps × batch) run with FedAvg, FedAvgM or FedAdam, printing the pooled
 * validation loss after each round and at the end as one JSON object per workflow. `centralized`
 * is experiment.ts's centralized baseline (the pooled data, rounds × local steps × clients steps,
 * its seeds), so a seed's table needs no experiment.ts run.
 *
 *   nice node --conditions=flotilla-source --import tsx examples/llm/src/server-opt.ts --workflows fedavgm,fedadam --rounds 12 --local-steps 6 --batch 4 --val 64
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import type { ServerOptimizerInput } from 'flotilla/algorithms';
import { simulateInProcess } from 'flotilla/simulator';
import { FedOpt } from 'flotilla/workflows';
import { StrategyWorkflow, fedAvgStrategy } from 'flotilla/workflows';
import { initBackend } from './backend.ts';
import { BpeTokenizer } from './bpe.ts';
import { Finetuner, evaluate } from './finetune.ts';
import { BatchSampler, loadClients } from './instruct.ts';
import { Rng } from './rng.ts';
import { baseDir } from './paths.ts';
import { DEFAULT_LORA, incoming, initialGlobalModel, llmTrainer, prepareModel } from './trainers.ts';

const o = new Command()
  .option('--workflows <list>', 'fedavg, fedavgm, fedadam, centralized (comma-separated)', 'fedavgm,fedadam')
  .option('--rounds <n>', 'rounds', '12')
  .option('--local-steps <n>', 'steps per client per round', '6')
  .option('--batch <n>', 'examples per step', '4')
  .option('--lr <x>', 'client learning rate (SFT)', '1.5e-3')
  .option('--val <n>', 'validation examples per client', '64')
  .option('--max-train <n>', 'training examples per client', '900')
  .option('--seed <n>', 'seed', '42')
  .option('--fedavgm <json>', 'FedAvgM settings', '{"lr":1,"momentum":0.7}')
  .option('--fedadam <json>', 'FedAdam settings', '{"lr":0.003,"tau":0.001}')
  .parse()
  .opts<Record<string, string>>();

async function main(): Promise<void> {
  await initBackend();
  const seed = Number(o.seed);
  const rounds = Number(o.rounds);
  const base = baseDir;
  const tok = BpeTokenizer.load(path.join(base, 'tokenizer.json'));
  const probe = await prepareModel('sft', base, DEFAULT_LORA, seed);
  const clients = loadClients(tok, { ctx: probe.config.maxSeqLen, seed, valCount: Number(o.val), maxTrain: Number(o.maxTrain) });
  const pooledOf = (model: typeof probe): { pooled: number; perDataset: Record<string, number> } => {
    let sum = 0;
    let tokens = 0;
    const perDataset: Record<string, number> = {};
    for (const c of clients) {
      const e = evaluate(model, c.val);
      perDataset[c.name] = e.loss;
      sum += e.loss * e.tokens;
      tokens += e.tokens;
    }
    return { pooled: sum / tokens, perDataset };
  };
  const pooled = (): { pooled: number; perDataset: Record<string, number> } => pooledOf(probe);
  const evalPooled = (model: typeof probe): number => pooledOf(model).pooled;
  for (const name of o.workflows!.split(',')) {
    if (name === 'centralized') {
      // experiment.ts's trainAlone for the pooled data: model seed + 100, batches Rng(seed + 117)
      const t0 = performance.now();
      const model = await prepareModel('sft', base, DEFAULT_LORA, seed + 100);
      const ft = new Finetuner(model, { lr: Number(o.lr) });
      const sampler = new BatchSampler(
        clients.flatMap((c) => c.train),
        Number(o.batch),
        new Rng(seed + 100 + 17),
      );
      const curve: [number, number][] = [[0, pooled().pooled]];
      for (let r = 1; r <= rounds; r++) {
        for (let s = 0; s < Number(o.localSteps) * clients.length; s++) ft.step(sampler.next());
        if (r < rounds) curve.push([r, evalPooled(model)]);
        console.error(`[centralized] round ${r} done`);
      }
      const final = pooledOf(model);
      ft.dispose();
      model.dispose();
      console.log(JSON.stringify({ workflow: name, settings: {}, rounds, seed, final, curve, seconds: (performance.now() - t0) / 1000 }));
      continue;
    }
    const initialModel = await initialGlobalModel('sft', base, DEFAULT_LORA, seed);
    const common = { rounds, minClients: clients.length, initialModel };
    const wf =
      name === 'fedavg'
        ? new StrategyWorkflow(common, fedAvgStrategy)
        : new FedOpt({ ...common, optimizer: { name, ...JSON.parse(o[name]!) } as ServerOptimizerInput });
    const workspace = mkdtempSync(path.join(tmpdir(), `llm-${name}-`));
    const t0 = performance.now();
    const curve: [number, number][] = [];
    try {
      const result = await simulateInProcess({
        workflow: wf,
        sites: clients.map((c, i) => ({
          name: c.name,
          trainer: llmTrainer({
            mode: 'sft',
            baseDir: base,
            data: c,
            localSteps: Number(o.localSteps),
            batch: Number(o.batch),
            lr: Number(o.lr),
            seed: seed + i,
            lora: DEFAULT_LORA,
          }),
        })),
        workspace,
        onRound: (r) => {
          const ms = Object.values(r.siteMetrics);
          const tokens = ms.reduce((a, m) => a + (m.val_tokens ?? 0), 0);
          curve.push([r.round, ms.reduce((a, m) => a + (m.val_loss ?? 0) * (m.val_tokens ?? 0), 0) / tokens]);
          console.error(`[${name}] round ${r.round}: pooled val loss of the model it started from ${curve.at(-1)![1].toFixed(4)}`);
        },
      });
      incoming(probe, 'sft', result.model);
      const final = pooled();
      console.log(
        JSON.stringify({
          workflow: name,
          settings: name === 'fedavg' ? {} : (JSON.parse(o[name]!) as Record<string, unknown>),
          rounds,
          seed,
          final,
          curve,
          seconds: (performance.now() - t0) / 1000,
        }),
      );
    } finally {
      rmSync(workspace, { recursive: true, force: true });
    }
  }
  probe.dispose();
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? e);
  process.exit(1);
});
