/**
 * Trains the example's byte-level BPE tokenizer on the pre-training text.
 * usage: node --conditions=flotilla-source --import tsx examples/llm/src/train-tokenizer.ts [--vocab 1024] [--out examples/llm/base/tokenizer.json]
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { BpeTokenizer } from './bpe.ts';
import { loadTextSources, tokenizerTrainingText } from './corpus.ts';
import { baseDir } from './paths.ts';

const opts = new Command()
  .option('--vocab <n>', 'vocabulary size (bytes + merges + specials)', '1024')
  .option('--out <file>', 'output JSON', path.join(baseDir, 'tokenizer.json'))
  .parse()
  .opts<{ vocab: string; out: string }>();

const vocab = Number(opts.vocab);
if (!Number.isInteger(vocab) || vocab < 257) throw new Error(`--vocab must be an integer ≥ 257, got ${opts.vocab}`);
const text = tokenizerTrainingText(loadTextSources());
const t0 = performance.now();
const tok = BpeTokenizer.train(text, vocab);
const secs = (performance.now() - t0) / 1000;
mkdirSync(path.dirname(opts.out), { recursive: true });
tok.save(opts.out);
const ids = tok.encode(text);
console.log(
  `trained ${tok.merges.length} merges in ${secs.toFixed(1)} s; vocab ${tok.vocabSize}; ` +
    `${text.length} chars → ${ids.length} tokens (${(Buffer.byteLength(text) / ids.length).toFixed(2)} bytes/token); wrote ${opts.out}`,
);
