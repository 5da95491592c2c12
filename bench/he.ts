/**
 * bench/he: one FedAvg round with CKKS homomorphic encryption (the he filter) against plain
 * FedAvg, for the protein MLP (examples/protein: 479 → 128 → 10, 62,730 float32 values) and the
 * LLM example's LoRA adapters (examples/llm jobs/peft: rank 4 on all 7 projections).
 *
 * Per round and model, with N sites: bytes on the wire (each site's upload, each site's download
 * of the global model) and CPU time of the HE work: a site encrypting its update, the server
 * summing N ciphertext updates (weight multiplication, addition, division by the total weight),
 * a site decrypting the aggregate; against the plain round's server aggregation (WeightedAverage)
 * and the plain bytes. Sites work in parallel, so the round's added time is one site's
 * encryption + the server's sum + one site's decryption (plus the extra transfer). The decrypted
 * aggregate is compared to plain FedAvg (largest absolute error). Also one ciphertext's size under
 * SEAL's zlib and zstd compression at each level (not used on the wire: docs/filters.md).
 *
 * With --simulate R, each model also runs R FedAvg rounds through `flotilla simulate` (the job of
 * bench/he-job.ts, the sites in worker threads) with and without the he filter: the rounds' wall
 * seconds as the round summaries give them (round 0 carries each process's context loading).
 *
 * Prints one JSON object. Usage:
 *   node --conditions=flotilla-source --import tsx bench/he.ts [--sites 3] [--models protein,lora] [--simulate 4]
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WeightedAverage } from '../src/aggregators/weighted-average.ts';
import { dictToStream, encodedBytes, streamToDict } from '../src/core/tensor-stream.ts';
import { type TensorDict, numel, tensor } from '../src/core/tensor.ts';
import { HE_SLOTS, HeContext, HeWeightedSum, decryptStream, encryptStream, generateHeKeys } from '../src/filters/index.ts';
import { simulate } from '../src/simulator/simulator.ts';
import { commitFacts } from './commit.ts';
import { loraModel, proteinModel } from './he-job.ts';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);

const argv = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1]! : def;
};
const sites = Number(opt('sites', '3'));
const simulateRounds = Number(opt('simulate', '0'));

/** R rounds of the bench job in the simulator, with or without he: each round's wall seconds. */
async function simulatedRounds(model: string, he: boolean): Promise<number[]> {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-bench-he-'));
  try {
    const job = join(dir, 'job');
    await mkdir(job);
    await writeFile(join(job, 'package.json'), '{ "type": "module" }\n');
    await writeFile(join(job, 'trainer.ts'), `export * from ${JSON.stringify(fileURLToPath(new URL('./he-job.ts', import.meta.url)))};\n`);
    const config = {
      name: `he-bench-${model}`,
      minClients: sites,
      model: { module: 'trainer.ts', export: model === 'protein' ? 'proteinModel' : 'loraModel' },
      workflows: [{ type: 'fedavg', rounds: simulateRounds }],
      executor: { trainer: { module: 'trainer.ts', factory: 'createTrainer' } },
      filters: he ? [{ type: 'he' }] : [],
    };
    await writeFile(join(job, 'job.json'), JSON.stringify(config));
    const r = await simulate({ jobDir: job, clients: sites, threads: sites, workspace: join(dir, 'ws') });
    return r.rounds.map((x) => r4(x.seconds));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
const models = opt('models', 'protein,lora').split(',');

function cpuSeconds<T>(f: () => Promise<T>): Promise<{ value: T; cpu: number; wall: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  return f().then((value) => {
    const c = process.cpuUsage(c0);
    return { value, cpu: (c.user + c.system) / 1e6, wall: (performance.now() - t0) / 1000 };
  });
}

/** Site k's result: the model plus a small update of its own. */
function siteResult(model: TensorDict, k: number): TensorDict {
  return new Map(
    [...model].map(([n, t]) => {
      const d = t.data as Float32Array;
      return [
        n,
        tensor(
          'F32',
          t.shape,
          d.map((v, i) => v + Math.sin(i * 0.37 * (k + 1)) * 0.01),
        ),
      ];
    }),
  );
}

const r4 = (x: number): number => +x.toFixed(4);

async function measure(name: string, model: TensorDict, site: HeContext, server: HeContext) {
  const results = Array.from({ length: sites }, (_, k) => siteResult(model, k));
  const weights = results.map((_, k) => 10 * (k + 1));
  const plainBytes = encodedBytes(dictToStream(model).header);

  // plain FedAvg: the server's aggregation
  const plain = await cpuSeconds(async () => {
    const agg = new WeightedAverage(model);
    for (const [k, r] of results.entries()) await agg.add(dictToStream(r), weights[k]!, 'FULL');
    return agg.result();
  });

  // HE: each site encrypts (one site's time shown: they run in parallel), the server sums, a site decrypts
  const encrypted: { wire: TensorDict; metadata: Record<string, string> }[] = [];
  const enc: number[] = [];
  let uploadBytes = 0;
  for (const r of results) {
    const e = await cpuSeconds(async () => {
      const s = encryptStream(dictToStream(r), site);
      return { wire: await streamToDict(s), metadata: { ...s.header.metadata }, bytes: encodedBytes(s.header) };
    });
    enc.push(e.cpu);
    uploadBytes = e.value.bytes;
    encrypted.push(e.value);
  }
  const sum = await cpuSeconds(async () => {
    const agg = new HeWeightedSum(server);
    for (const [k, e] of encrypted.entries()) await agg.add(dictToStream(e.wire, { metadata: e.metadata }), weights[k]!, 'FULL');
    return agg.result()!;
  });
  const downloadBytes = encodedBytes(dictToStream(sum.value.model, { metadata: sum.value.metadata }).header);
  const dec = await cpuSeconds(() => streamToDict(decryptStream(dictToStream(sum.value.model, { metadata: sum.value.metadata }), site)));
  let maxAbsError = 0;
  for (const [n, t] of plain.value) {
    const a = t.data as Float32Array;
    const b = dec.value.get(n)!.data as Float32Array;
    for (let i = 0; i < a.length; i++) maxAbsError = Math.max(maxAbsError, Math.abs(a[i]! - b[i]!));
  }
  const values = [...model.values()].reduce((n, t) => n + numel(t.shape), 0);
  const encryptCpu = enc.reduce((a, b) => a + b, 0) / enc.length;
  const added = encryptCpu + sum.cpu + dec.cpu;
  return {
    model: name,
    tensors: model.size,
    values,
    ciphertextsPerModel: Math.round(uploadBytes / 393_329),
    bytes: {
      plainPerTransfer: plainBytes,
      heUploadPerSite: uploadBytes,
      heDownloadPerSite: downloadBytes,
      uploadRatio: r4(uploadBytes / plainBytes),
      downloadRatio: r4(downloadBytes / plainBytes),
      plainRound: 2 * sites * plainBytes,
      heRound: sites * (uploadBytes + downloadBytes),
    },
    cpuSeconds: {
      plainServerAggregate: r4(plain.cpu),
      heSiteEncrypt: r4(encryptCpu),
      heServerSum: r4(sum.cpu),
      heSiteDecrypt: r4(dec.cpu),
      heAddedPerRound: r4(added - plain.cpu),
    },
    maxAbsErrorVsPlainFedAvg: maxAbsError,
  };
}

const keygen = await cpuSeconds(() => generateHeKeys());
const ctxLoad = await cpuSeconds(async () => ({
  site: await HeContext.load(keygen.value.site),
  server: await HeContext.load(keygen.value.server),
}));
/** SEAL's own compression of one ciphertext at each level: bytes and CPU ms (docs/filters.md: not used on the wire). */
function compression(ctx: HeContext): Record<string, unknown> {
  const values = Float64Array.from({ length: HE_SLOTS }, (_, i) => Math.sin(i) * 0.05);
  const ct = ctx.load(ctx.encrypt(values), 'bench');
  const sizes = (): Record<string, number> => {
    const r: Record<string, number> = {};
    for (const mode of ['none', 'zlib', 'zstd'] as const) {
      const c0 = process.cpuUsage();
      r[mode] = ctx.save(ct, mode).byteLength;
      const c = process.cpuUsage(c0);
      r[`${mode}CpuMs`] = +((c.user + c.system) / 1000).toFixed(1);
    }
    return r;
  };
  const fresh = sizes();
  ctx.multiplyInPlace(ct, 0.5);
  const afterWeight = sizes();
  ctx.multiplyInPlace(ct, 0.5);
  const aggregate = sizes();
  ct.delete();
  // the compressed size of the same values encrypted five times
  const zstdSpread = Array.from({ length: 5 }, () => {
    const c = ctx.load(ctx.encrypt(values), 'bench');
    const n = ctx.save(c, 'zstd').byteLength;
    c.delete();
    return n;
  });
  return { fresh, afterWeight, aggregate, zstdSpread };
}

const out = [];
for (const m of models) {
  const model = m === 'protein' ? proteinModel() : m === 'lora' ? await loraModel() : null;
  if (!model) throw new Error(`--models: unknown model ${m} (protein, lora)`);
  const measured = await measure(m, model, ctxLoad.value.site, ctxLoad.value.server);
  if (simulateRounds > 0) {
    const plainRounds = await simulatedRounds(m, false);
    const heRounds = await simulatedRounds(m, true);
    const mean = (xs: number[]): number => r4(xs.slice(1).reduce((a, b) => a + b, 0) / Math.max(1, xs.length - 1));
    Object.assign(measured, {
      simulatedRoundSeconds: { plain: plainRounds, he: heRounds, plainMeanAfterFirst: mean(plainRounds), heMeanAfterFirst: mean(heRounds) },
    });
  }
  out.push(measured);
}
process.stdout.write(
  `${JSON.stringify(
    {
      bench: 'he',
      ...commitFacts(),
      node: process.version,
      cpus: cpus().length,
      loadavg: (await import('node:os')).loadavg().map((x) => +x.toFixed(1)),
      scheme: 'CKKS, N 8192, moduli 60-40-40-60, scale 2^40 (node-seal 6.0.3, SEAL 4.x WASM)',
      sites,
      keygenCpuSeconds: r4(keygen.cpu),
      contextLoadCpuSeconds: r4(ctxLoad.cpu),
      models: out,
      ciphertextCompression: compression(ctxLoad.value.site),
      peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
    },
    null,
    2,
  )}\n`,
);
