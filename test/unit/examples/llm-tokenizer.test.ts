/** Byte-level BPE: training, exact round trips, JSON save/load, the committed tokenizer. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BpeTokenizer, EOT, GPT2_PATTERN } from '../../../examples/llm/src/bpe.ts';
import { baseDir, dataDir } from '../../../examples/llm/src/paths.ts';

const TEXT = 'the cat sat on the mat. the cat ate the rat! then the cat sat again, and the rat ran.\n\nThe end.';

test('training learns the frequent pairs first and is deterministic', () => {
  const a = BpeTokenizer.train(TEXT.repeat(3), 256 + 20 + 1);
  const b = BpeTokenizer.train(TEXT.repeat(3), 256 + 20 + 1);
  assert.deepEqual(a.merges, b.merges);
  assert.equal(a.merges.length, 20);
  assert.equal(a.vocabSize, 277);
  assert.equal(a.specialId(EOT), 276);
  // The first merge is the most frequent adjacent pair within pre-tokens, counted independently here.
  const counts = new Map<string, number>();
  for (const m of TEXT.repeat(3).matchAll(new RegExp(GPT2_PATTERN, 'gu'))) {
    for (let i = 0; i + 1 < m[0].length; i++) counts.set(m[0].slice(i, i + 2), (counts.get(m[0].slice(i, i + 2)) ?? 0) + 1);
  }
  const top = Math.max(...counts.values());
  assert.equal(counts.get(a.decode([256])), top, `first merge ${JSON.stringify(a.decode([256]))}`);
  const ids = a.encode(' the cat');
  assert.ok(ids.length < Buffer.byteLength(' the cat'), 'merges compress');
  assert.equal(a.decode(ids), ' the cat');
  assert.equal(a.decode([...a.encode('x'), a.specialId(EOT)]), `x${EOT}`);
});

test('decode(encode(s)) === s for any unicode string', () => {
  const tok = BpeTokenizer.train(TEXT, 300);
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 60 }), (s) => tok.decode(tok.encode(s)) === s),
    { numRuns: 300 },
  );
  for (const s of ['', ' ', '\n\n\t  x', 'héllo wörld — 日本語 🙂🏳️‍🌈', "it's 42's", 'a'.repeat(500)])
    assert.equal(tok.decode(tok.encode(s)), s);
});

test('save/load keeps the encoding; invalid files are refused with the field named', () => {
  const tok = BpeTokenizer.train(TEXT, 290);
  const dir = mkdtempSync(path.join(tmpdir(), 'bpe-'));
  try {
    tok.save(path.join(dir, 't.json'));
    const back = BpeTokenizer.load(path.join(dir, 't.json'));
    assert.deepEqual(back.encode(TEXT), tok.encode(TEXT));
    assert.equal(back.vocabSize, tok.vocabSize);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.throws(() => new BpeTokenizer([[1, 999]], {}), /merge 0 refers to id 999/);
});

test('the committed tokenizer (vocab 1024) round-trips real text and compresses it', () => {
  const tok = BpeTokenizer.load(path.join(baseDir, 'tokenizer.json'));
  assert.equal(tok.vocabSize, 1024);
  for (const f of ['text/tinyshakespeare.txt', 'text/tinystories_val_sample.txt', 'instruct/alpaca_data_1k.json']) {
    const s = readFileSync(path.join(dataDir, f), 'utf8').slice(0, 20_000);
    const ids = tok.encode(s);
    assert.equal(tok.decode(ids), s, f);
    assert.ok(ids.every((i) => i >= 0 && i < 1024));
    assert.ok(Buffer.byteLength(s) / ids.length > 1.8, `${f}: ${(Buffer.byteLength(s) / ids.length).toFixed(2)} bytes/token`);
  }
});
