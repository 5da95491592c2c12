/**
 * Writes one site's tokenized instruction data (the same split the tfjs trainers use, trainerFor in
 * job-entry.ts) as JSON, for the PyTorch sites (python/train_llm.py): the tokenizer, the prompt
 * template and the seeded split live in TypeScript only, so both kinds of site see identical examples.
 *   node --import tsx examples/llm/src/export-data.ts --site-index 1 --seed 0 --out data.json
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { BpeTokenizer } from './bpe.ts';
import { CLIENT_SOURCES, loadClient } from './instruct.ts';
import { fromHfConfig } from './config.ts';
import { baseDir } from './paths.ts';

const int = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`expected a non-negative integer, got "${v}"`);
  return n;
};

const o = new Command()
  .requiredOption('--site-index <n>', 'site index (0-based): data set index mod 3, split seed = seed + index', int)
  .option('--seed <n>', 'the job seed', int, 0)
  .option('--val-count <n>', 'validation examples', int, 32)
  .option('--max-train <n>', 'cap on training examples', int, 900)
  .option('--ctx <n>', 'sequence length (0: the base model context)', int, 0)
  .requiredOption('--out <file>', 'JSON file to write')
  .parse()
  .opts<{ siteIndex: number; seed: number; valCount: number; maxTrain: number; ctx: number; out: string }>();

// config.ts, not io.ts: this runs without the flotilla package (no --conditions=flotilla-source)
const configFile = path.join(baseDir, 'config.json');
const config = fromHfConfig(JSON.parse(readFileSync(configFile, 'utf8')), configFile);
const name = CLIENT_SOURCES[o.siteIndex % CLIENT_SOURCES.length]!.name;
const seed = o.seed + o.siteIndex;
const data = loadClient(BpeTokenizer.load(path.join(baseDir, 'tokenizer.json')), name, {
  ctx: o.ctx || config.maxSeqLen,
  seed,
  valCount: o.valCount,
  maxTrain: o.maxTrain,
});
const ex = (e: { ids: Int32Array; promptLen: number }) => ({ ids: [...e.ids], promptLen: e.promptLen });
writeFileSync(o.out, JSON.stringify({ name, seed, ctx: o.ctx || config.maxSeqLen, train: data.train.map(ex), val: data.val.map(ex) }));
