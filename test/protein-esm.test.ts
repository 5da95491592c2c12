// ESM-2 needs onnxruntime-node or @huggingface/transformers and a local model
// directory; neither is available here, so these tests cover the error paths.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EsmEmbedder, EsmSetupError, truncateTermini } from '../examples/protein/src/esm.ts';

describe('ESM-2 embedder setup errors', () => {
  let root = '';
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'protein-esm-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  const rejects = (p: Promise<unknown>, re: RegExp): Promise<void> =>
    assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof EsmSetupError, `expected EsmSetupError, got ${String(e)}`);
      assert.match(e.message, re);
      return true;
    });

  it('names the missing directory and the files it expects', async () => {
    const dir = path.join(root, 'nope');
    await rejects(EsmEmbedder.load({ modelDir: dir }), new RegExp(`${dir.replace(/[/\\]/g, '.')} does not exist.*config\\.json, vocab\\.txt, model\\.onnx or onnx/model\\.onnx`));
  });

  it('lists the files missing from a wrong directory, per runtime', async () => {
    const dir = path.join(root, 'partial');
    await mkdir(dir);
    await writeFile(path.join(dir, 'config.json'), '{}');
    await rejects(EsmEmbedder.load({ modelDir: dir }), /is missing vocab\.txt, model\.onnx or onnx\/model\.onnx/);
    await rejects(EsmEmbedder.load({ modelDir: dir, runtime: '@huggingface/transformers' }), /is missing tokenizer\.json or vocab\.txt, onnx\/model\.onnx or onnx\/model_quantized\.onnx/);
    const file = path.join(root, 'a-file');
    await writeFile(file, 'x');
    await rejects(EsmEmbedder.load({ modelDir: file }), /is not a directory/);
  });

  it('rejects a config.json that is not an ESM model', async () => {
    const dir = path.join(root, 'bert');
    await mkdir(path.join(dir, 'onnx'), { recursive: true });
    await writeFile(path.join(dir, 'vocab.txt'), '<cls>\n<pad>\n<eos>\n<unk>\nL\n');
    await writeFile(path.join(dir, 'onnx', 'model.onnx'), '');
    await writeFile(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'bert', hidden_size: 768 }));
    await rejects(EsmEmbedder.load({ modelDir: dir }), /config\.json: model_type: .*esm.*not an ESM-2 model config/);
    await writeFile(path.join(dir, 'config.json'), '{ not json');
    await rejects(EsmEmbedder.load({ modelDir: dir }), /config\.json: not valid JSON/);
  });

  it('with a well-formed directory, names the inference package that is not installed', async () => {
    const dir = path.join(root, 'esm2_t6_8M_UR50D');
    await mkdir(path.join(dir, 'onnx'), { recursive: true });
    await writeFile(path.join(dir, 'vocab.txt'), '<cls>\n<pad>\n<eos>\n<unk>\nL\n');
    await writeFile(path.join(dir, 'tokenizer.json'), '{}');
    await writeFile(path.join(dir, 'onnx', 'model.onnx'), '');
    await writeFile(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'esm', hidden_size: 320, num_hidden_layers: 6 }));
    await rejects(EsmEmbedder.load({ modelDir: dir }), /needs the npm package "onnxruntime-node", which is not installed.*npm install onnxruntime-node/);
    await rejects(EsmEmbedder.load({ modelDir: dir, runtime: '@huggingface/transformers' }), /needs the npm package "@huggingface\/transformers", which is not installed/);
  });

  it('keeps both termini of an over-long protein', () => {
    assert.equal(truncateTermini('ABCDEFGHIJ', 4), 'ABIJ');
    assert.equal(truncateTermini('ABCDEFGHIJ', 5), 'ABCIJ');
    assert.equal(truncateTermini('ABC', 5), 'ABC');
  });
});
