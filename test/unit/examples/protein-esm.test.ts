// The ESM-2 embedder: setup errors, and the onnxruntime-node inference path end
// to end on a tiny ESM-2-shaped ONNX model (examples/protein/src/tiny-esm.ts)
// whose expected hidden states are recomputed here, in float64, from the same
// weights. No real ESM-2 export can be downloaded here.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { embedCached } from '../../../examples/protein/src/embedder.ts';
import { EsmEmbedder, EsmSetupError, truncateTermini } from '../../../examples/protein/src/esm.ts';
import { ESM2_VOCAB, type TinyEsmWeights, writeTinyEsm } from '../../../examples/protein/src/tiny-esm.ts';

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
    await rejects(
      EsmEmbedder.load({ modelDir: dir }),
      new RegExp(`${dir.replace(/[/\\]/g, '.')} does not exist.*config\\.json, vocab\\.txt, model\\.onnx or onnx/model\\.onnx`),
    );
  });

  it('lists the files missing from a wrong directory, per runtime', async () => {
    const dir = path.join(root, 'partial');
    await mkdir(dir);
    await writeFile(path.join(dir, 'config.json'), '{}');
    await rejects(EsmEmbedder.load({ modelDir: dir }), /is missing vocab\.txt, model\.onnx or onnx\/model\.onnx/);
    await rejects(
      EsmEmbedder.load({ modelDir: dir, runtime: '@huggingface/transformers' }),
      /is missing tokenizer\.json or vocab\.txt, onnx\/model\.onnx or onnx\/model_quantized\.onnx/,
    );
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

  it('with a well-formed directory but a broken model, names the file; names a package that is not installed', async () => {
    const dir = path.join(root, 'esm2_t6_8M_UR50D');
    await mkdir(path.join(dir, 'onnx'), { recursive: true });
    await writeFile(path.join(dir, 'vocab.txt'), '<cls>\n<pad>\n<eos>\n<unk>\nL\n');
    await writeFile(path.join(dir, 'tokenizer.json'), '{}');
    await writeFile(path.join(dir, 'onnx', 'model.onnx'), '');
    await writeFile(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'esm', hidden_size: 320, num_hidden_layers: 6 }));
    await rejects(EsmEmbedder.load({ modelDir: dir }), /onnx\/model\.onnx: onnxruntime-node cannot load it/);
    await rejects(
      EsmEmbedder.load({ modelDir: dir, runtime: '@huggingface/transformers' }),
      /needs the npm package "@huggingface\/transformers", which is not installed/,
    );
  });

  it('keeps both termini of an over-long protein', () => {
    assert.equal(truncateTermini('ABCDEFGHIJ', 4), 'ABIJ');
    assert.equal(truncateTermini('ABCDEFGHIJ', 5), 'ABCIJ');
    assert.equal(truncateTermini('ABC', 5), 'ABC');
  });
});

/**
 * The tiny model's forward pass for one unpadded token row, in float64, written
 * from the graph's definition (tiny-esm.ts) rather than from its ONNX nodes:
 * e[t] = tok[id_t] + pos[t + 2]; ctx = mean_t e[t]; out[t] = tanh((e[t] + ctx)·W + b).
 */
function referenceHidden(wt: TinyEsmWeights, ids: readonly number[]): number[][] {
  const H = wt.hidden;
  const e = ids.map((id, t) => Array.from({ length: H }, (_, h) => wt.tok[id * H + h]! + wt.pos[(t + 2) * H + h]!));
  const ctx = Array.from({ length: H }, (_, h) => e.reduce((s, row) => s + row[h]!, 0) / e.length);
  return e.map((row) =>
    Array.from({ length: H }, (_, j) => {
      let acc = wt.b[j]!;
      for (let i = 0; i < H; i++) acc += (row[i]! + ctx[i]!) * wt.w[i * H + j]!;
      return Math.tanh(acc);
    }),
  );
}

/** Expected embedding: the mean over residue positions (not <cls>, not <eos>) of the reference hidden states. */
function expectedEmbedding(wt: TinyEsmWeights, residues: string): number[] {
  const id = (tok: string): number => ESM2_VOCAB.indexOf(tok);
  const ids = [id('<cls>'), ...[...residues].map((c) => (ESM2_VOCAB.includes(c) ? id(c) : id('<unk>'))), id('<eos>')];
  const hidden = referenceHidden(wt, ids);
  const rows = hidden.slice(1, -1);
  return Array.from({ length: wt.hidden }, (_, h) => rows.reduce((s, r) => s + r[h]!, 0) / rows.length);
}

function assertClose(actual: Float32Array, expected: readonly number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol, `${what}[${i}]: got ${actual[i]}, expected ${expected[i]} (tolerance ${tol})`);
  }
}

describe('ESM-2 embedder on a tiny ESM-2-shaped ONNX model (onnxruntime-node)', () => {
  let root = '';
  let dir = '';
  let wt: TinyEsmWeights;
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'protein-esm-run-'));
    dir = path.join(root, 'tiny_esm2');
    wt = await writeTinyEsm(dir, { hidden: 16, maxResidues: 64, seed: 7 });
  });
  after(() => rm(root, { recursive: true, force: true }));

  // different lengths (so batches are padded), a non-standard residue (U), a
  // character outside the vocabulary (J → <unk>), and one 150-residue protein
  // longer than the model's 64
  const long = 'MKRLLASTVLGAFLLSACSSEKPAAQ'.repeat(6).slice(0, 150);
  const seqs = ['MKTAYIAKQR', 'GSHMLE', 'MADEEKLPPGWEKRMSRSSGRVYYFNHITNASQWERPSG', 'AUJW', long, 'PEPTIDEKKKRKV'];

  it('gives the mean over residue positions of the expected hidden states, to 1e-5, in input order', async () => {
    const esm = await EsmEmbedder.load({ modelDir: dir, batchSize: 4 });
    assert.equal(esm.dim, 16);
    assert.equal(esm.maxResidues, 64, 'default maxResidues = max_position_embeddings − 4');
    assert.equal(esm.batchSize, 4);
    const out = await esm.embed(seqs);
    assert.equal(out.length, seqs.length);
    seqs.forEach((s, i) => assertClose(out[i]!, expectedEmbedding(wt, truncateTermini(s, 64)), 1e-5, `seq ${i}`));
    // the pooling excludes <cls>/<eos>: including them gives something else
    const id = (tok: string): number => ESM2_VOCAB.indexOf(tok);
    const all = referenceHidden(wt, [id('<cls>'), ...[...seqs[0]!].map(id), id('<eos>')]);
    const withSpecial = Array.from({ length: 16 }, (_, h) => all.reduce((s, r) => s + r[h]!, 0) / all.length);
    assert.ok(withSpecial.some((v, h) => Math.abs(v - out[0]![h]!) > 1e-3));
  });

  it('gives the same embeddings whatever the batch size (padding is masked)', async () => {
    const one = await (await EsmEmbedder.load({ modelDir: dir, batchSize: 1 })).embed(seqs);
    const all = await (await EsmEmbedder.load({ modelDir: dir, batchSize: 64 })).embed(seqs);
    one.forEach((r, i) => assertClose(all[i]!, Array.from(r), 1e-5, `seq ${i}, batch 64 vs 1`));
    // a batch of identical sequences gives identical rows
    const same = await (await EsmEmbedder.load({ modelDir: dir, batchSize: 3 })).embed(['GSHMLE', 'GSHMLE', 'GSHMLE']);
    for (const r of same) assertClose(r, Array.from(one[1]!), 1e-6, 'repeated GSHMLE');
    assert.deepEqual(await (await EsmEmbedder.load({ modelDir: dir })).embed([]), []);
  });

  it('truncates long proteins to maxResidues, keeping both termini', async () => {
    const esm = await EsmEmbedder.load({ modelDir: dir, maxResidues: 10 });
    assert.equal(esm.maxResidues, 10);
    const [a, b] = await esm.embed([long, 'MKTAYIAKQR']);
    assertClose(a!, expectedEmbedding(wt, long.slice(0, 5) + long.slice(-5)), 1e-5, 'long, 10 residues');
    assertClose(b!, expectedEmbedding(wt, 'MKTAYIAKQR'), 1e-5, 'exactly 10 residues');
    assert.notEqual(esm.name, (await EsmEmbedder.load({ modelDir: dir })).name, 'maxResidues is part of the name (cache key)');
    await assert.rejects(
      EsmEmbedder.load({ modelDir: dir, maxResidues: 65 }),
      /maxResidues: 65 is more than .*max_position_embeddings 68 allows \(64 residues/,
    );
  });

  it('reads the optimum layout (onnx/model.onnx) and caches through embedCached', async () => {
    const opt = path.join(root, 'optimum');
    await writeTinyEsm(opt, { hidden: 8, maxResidues: 32, seed: 3, layout: 'optimum' });
    const esm = await EsmEmbedder.load({ modelDir: opt, threads: 1 });
    const first = await embedCached(esm, seqs.slice(0, 3), path.join(root, 'cache'));
    const again = await embedCached(esm, seqs.slice(0, 3), path.join(root, 'cache'));
    assert.equal(first.hit, false);
    assert.equal(again.hit, true);
    first.rows.forEach((r, i) => assertClose(again.rows[i]!, Array.from(r), 0, `cached row ${i}`));
    assert.equal(first.rows[0]!.length, 8);
  });

  it('fails clearly on a config.json whose hidden_size does not match the model, a vocab without <pad>, bad options, a fill-mask export', async () => {
    const bad = path.join(root, 'bad');
    await writeTinyEsm(bad, { hidden: 16, maxResidues: 64, seed: 7 });
    await writeFile(path.join(bad, 'config.json'), JSON.stringify({ model_type: 'esm', hidden_size: 320 }));
    const esm = await EsmEmbedder.load({ modelDir: bad });
    assert.equal(esm.maxResidues, 1022, 'no max_position_embeddings: ESM-2 default');
    await assert.rejects(esm.embed(['MKT']), /last_hidden_state has dims \[1, 5, 16\], expected \[1, 5, 320\]/);
    await writeFile(path.join(bad, 'vocab.txt'), ESM2_VOCAB.filter((t) => t !== '<pad>').join('\n'));
    await assert.rejects(
      EsmEmbedder.load({ modelDir: bad }),
      (e: unknown) => e instanceof EsmSetupError && /vocab\.txt has no <pad> token/.test(e.message),
    );
    await assert.rejects(EsmEmbedder.load({ modelDir: dir, batchSize: 0 }), /ESM-2 option batchSize: /);
    const mlm = path.join(root, 'fill-mask-export');
    await writeTinyEsm(mlm, { hidden: 8, outputName: 'logits' });
    await assert.rejects(
      EsmEmbedder.load({ modelDir: mlm }),
      /model\.onnx: the model has no last_hidden_state output \(outputs: logits\); .*--task feature-extraction/,
    );
  });
});
