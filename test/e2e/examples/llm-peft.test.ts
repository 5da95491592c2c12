/**
 * A shortened federated PEFT run on the committed base model and the real
 * instruction data: three sites (Alpaca, GPTeacher role-play, GPTeacher
 * Toolformer), FedAvg over LoRA adapters only. The pooled validation loss
 * must fall, and only adapter tensors may travel.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dictBytes } from '../../../src/core/tensor.ts';
import { simulateInProcess } from '../../../src/simulator/in-process.ts';
import { FedAvg } from '../../../src/workflows/fedavg.ts';
import { BpeTokenizer } from '../../../examples/llm/src/bpe.ts';
import { evaluate } from '../../../examples/llm/src/finetune.ts';
import { CLIENT_SOURCES, type Example, loadClient } from '../../../examples/llm/src/instruct.ts';
import { PEFT_PREFIX } from '../../../examples/llm/src/model.ts';
import { baseDir } from '../../../examples/llm/src/paths.ts';
import { DEFAULT_LORA, initialGlobalModel, llmTrainer, prepareModel } from '../../../examples/llm/src/trainers.ts';

test('federated LoRA on three instruction data sets: pooled validation loss falls, only adapters travel', async () => {
  const tok = BpeTokenizer.load(path.join(baseDir, 'tokenizer.json'));
  // Short sequences and few examples keep this under ~30 s on two cores.
  const clients = CLIENT_SOURCES.map((s) => loadClient(tok, s.name, { ctx: 192, seed: 1, valCount: 6, maxTrain: 16 }));
  const pooled: Example[] = clients.flatMap((c) => c.val);
  const seed = 3;
  const initialModel = await initialGlobalModel('peft', baseDir, DEFAULT_LORA, seed);
  assert.ok([...initialModel.keys()].every((k) => k.startsWith(PEFT_PREFIX) && /\.lora_[AB]\.weight$/.test(k)));

  const probe = await prepareModel('peft', baseDir, DEFAULT_LORA, seed);
  probe.loadAdapterDict(initialModel);
  const before = evaluate(probe, pooled).loss;
  const full = dictBytes(probe.toTensorDict());

  const workspace = mkdtempSync(path.join(tmpdir(), 'llm-peft-'));
  try {
    const sent: number[] = [];
    const result = await simulateInProcess({
      workflow: new FedAvg({ rounds: 2, minClients: 3, initialModel }),
      sites: clients.map((c, i) => ({
        name: c.name,
        trainer: llmTrainer({ mode: 'peft', baseDir, data: c, localSteps: 3, batch: 4, lr: 5e-3, seed: seed + i }),
      })),
      workspace,
      onRound: (r) => sent.push(Object.keys(r.siteMetrics).length),
    });
    assert.equal(result.rounds.length, 2);
    assert.deepEqual(sent, [3, 3]);
    for (const r of result.rounds) for (const m of Object.values(r.siteMetrics)) assert.ok(Number.isFinite(m.val_loss));

    assert.deepEqual([...result.model.keys()], [...initialModel.keys()], 'the global model is the adapters, nothing else');
    const adapterBytes = dictBytes(result.model);
    assert.ok(adapterBytes < 0.05 * full, `adapters are ${((100 * adapterBytes) / full).toFixed(1)}% of the full model`);

    probe.loadAdapterDict(result.model);
    const afterLoss = evaluate(probe, pooled).loss;
    console.log(`pooled validation loss ${before.toFixed(3)} → ${afterLoss.toFixed(3)}; adapters ${adapterBytes} B vs full ${full} B`);
    assert.ok(afterLoss < before - 0.05, `pooled val loss fell: ${before} → ${afterLoss}`);
  } finally {
    probe.dispose();
    rmSync(workspace, { recursive: true, force: true });
  }
});
