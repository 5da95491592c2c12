// CKKS homomorphic encryption (node-seal): sites encrypt, the server's context (no secret key)
// sums the ciphertexts weighted, a site decrypts the plain FedAvg mean; other contexts, plain
// results and malformed ciphertexts are refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Tensor, type TensorDict, tensor } from '../../../src/core/tensor.ts';
import { dictToStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import {
  HE_KEY,
  HE_SLOTS,
  HE_TENSOR,
  HeContext,
  HeWeightedSum,
  ciphertextBytes,
  decryptStream,
  encryptStream,
  generateHeKeys,
  readHeMeta,
} from '../../../src/filters/index.ts';
import { parseJobConfig } from '../../../src/runtime/job-config.ts';

function siteModel(seed: number): TensorDict {
  const f = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed * k) * (k + 1) * 0.1);
  return new Map<string, Tensor>([
    ['fc1.weight', tensor('F32', [50, 181], f(9050, 1))],
    ['fc1.bias', tensor('F32', [50], f(50, 2))],
    ['head.weight', tensor('F64', [3, 5], Float64Array.from(f(15, 3)))],
  ]);
}

// one key set and its contexts for the file (making and loading a CKKS context takes seconds)
const keys = generateHeKeys();
const contexts = keys.then(async (k) => ({ siteCtx: await HeContext.load(k.site), serverCtx: await HeContext.load(k.server) }));

test('the server context holds no secret key and cannot decrypt; the decrypted aggregate is plain FedAvg within 1e-3', async () => {
  const { site, server } = await keys;
  assert.equal(server.secretKey, undefined);
  assert.ok(site.secretKey);
  assert.equal(site.fingerprint, server.fingerprint);
  const { siteCtx, serverCtx } = await contexts;
  assert.equal(serverCtx.canDecrypt, false);
  assert.equal(siteCtx.canDecrypt, true);

  const models = [siteModel(1), siteModel(2), siteModel(3)];
  const weights = [1, 2, 5];
  const agg = new HeWeightedSum(serverCtx);
  for (const [i, m] of models.entries()) {
    // small pieces: chunks of a ciphertext span pieces
    const enc = encryptStream(dictToStream(m, { chunkBytes: 1000 }), siteCtx);
    const meta = readHeMeta(enc.header.metadata)!;
    assert.equal(meta.ct, ciphertextBytes(3));
    // all 9,115 values packed into 3 ciphertexts, one tensor of them
    assert.deepEqual(
      enc.header.tensors.map((t) => [t.name, t.dtype, t.shape]),
      [[HE_TENSOR, 'U8', [Math.ceil(9115 / HE_SLOTS) * meta.ct]]],
    );
    const wire = await streamToDict(enc);
    await agg.add(dictToStream(wire, { chunkBytes: 65536, metadata: { ...enc.header.metadata } }), weights[i]!, 'FULL');
  }
  assert.equal(agg.count, 3);
  const out = agg.result()!;
  const encrypted = dictToStream(out.model, { metadata: out.metadata });
  // the server cannot read what it aggregated
  await assert.rejects(streamToDict(decryptStream(dictToStream(out.model, { metadata: out.metadata }), serverCtx)), /no secret key/);
  const back = await streamToDict(decryptStream(encrypted, siteCtx));
  assert.equal(back.get('head.weight')!.dtype, 'F64');
  let worst = 0;
  for (const [name, t] of models[0]!) {
    const got = back.get(name)!;
    assert.deepEqual(got.shape, t.shape);
    for (let j = 0; j < t.data.length; j++) {
      const want = models.reduce((s, m, i) => s + weights[i]! * Number(m.get(name)!.data[j]!), 0) / 8;
      worst = Math.max(worst, Math.abs(Number(got.data[j]!) - want));
    }
  }
  assert.ok(worst < 1e-3, `largest error ${worst}`);
  assert.ok(worst > 0, 'CKKS is approximate: an exact result means nothing was encrypted');
});

test('a ciphertext of another context, a plain result, a DIFF and malformed bytes are refused; the context still works after', async () => {
  const { siteCtx, serverCtx } = await contexts;
  const other = await generateHeKeys();
  const otherCtx = await HeContext.load(other.site);
  const m = siteModel(1);
  const agg = new HeWeightedSum(serverCtx);
  await assert.rejects(agg.add(encryptStream(dictToStream(m), otherCtx), 1, 'FULL'), /another HE context.*different provisioning runs/);
  await assert.rejects(agg.add(dictToStream(m), 1, 'FULL'), /not encrypted/);
  await assert.rejects(agg.add(encryptStream(dictToStream(m), siteCtx), 1, 'DIFF'), /FULL models; this result is a DIFF/);
  // same header, garbage ciphertext bytes: refused before SEAL's loader sees them
  const enc = encryptStream(dictToStream(m), siteCtx);
  const wire = await streamToDict(enc);
  const bytes = wire.get(HE_TENSOR)!.data as Uint8Array;
  const ct = bytes.byteLength / 3;
  const corrupt = async (from: number, to: number, value: number): Promise<void> => {
    const copy = new Map([[HE_TENSOR, tensor('U8', [bytes.byteLength], bytes.slice())]]);
    copy.get(HE_TENSOR)!.data.fill(value, from, to);
    await agg.add(dictToStream(copy, { metadata: { ...enc.header.metadata } }), 1, 'FULL');
  };
  // ciphertext 1's SEAL header, then coefficients of ciphertext 2 above every modulus
  await assert.rejects(corrupt(ct, ct + 4, 7), /ciphertext 1: not a ciphertext \(not a SEAL object\)/);
  await assert.rejects(corrupt(2 * ct + 1000, 2 * ct + 2000, 0xff), /ciphertext 2: not a ciphertext of this context/);
  assert.equal(agg.count, 0);
  // the site refuses an aggregate of another context too
  const foreign = encryptStream(dictToStream(m), otherCtx);
  assert.throws(() => decryptStream(foreign, siteCtx), /another HE context/);
  // a metadata key that lies about the sizes
  const meta = JSON.parse(enc.header.metadata[HE_KEY]!) as { ct: number };
  meta.ct -= 8;
  assert.throws(
    () => decryptStream({ ...enc, header: { ...enc.header, metadata: { [HE_KEY]: JSON.stringify(meta) } } }, siteCtx),
    /ciphertexts of/,
  );
  // still usable
  await agg.add(encryptStream(dictToStream(m), siteCtx), 1, 'FULL');
  const back = await streamToDict(decryptStream(dictToStream(agg.result()!.model, { metadata: {} }), siteCtx));
  assert.deepEqual([...back.keys()], [HE_TENSOR], 'without its metadata the aggregate stays ciphertext bytes');
  // an he job's results are float tensors only
  assert.throws(
    () => encryptStream(dictToStream(new Map([['steps', tensor('I64', [1])]])), siteCtx),
    /"steps" is I64: .*float tensors only/,
  );
});

test('job.yaml: he runs with fedavg only, alone among the built-in filters, each refusal naming the field', () => {
  const job = (extra: Record<string, unknown>) => ({
    name: 'j',
    minClients: 2,
    model: { path: 'm.safetensors' },
    workflows: [{ type: 'fedavg', rounds: 1 }],
    executor: { trainer: { module: 't.ts', factory: 'f' } },
    filters: [{ type: 'he' }],
    ...extra,
  });
  assert.equal(parseJobConfig(job({})).filters[0]!.type, 'he');
  assert.throws(
    () =>
      parseJobConfig(
        job({
          workflows: [
            { type: 'fedavg', rounds: 1 },
            { type: 'cyclic', rounds: 1 },
          ],
        }),
      ),
    /workflows\.1: filters\.0 \(he\) works with the fedavg workflow only \(the server sums ciphertexts\): cyclic needs the plain model/,
  );
  assert.throws(
    () => parseJobConfig(job({ workflows: [{ type: 'fedavg', rounds: 1, offload: true }] })),
    /workflows\.0: .*set offload: false/,
  );
  assert.throws(
    () => parseJobConfig(job({ workflows: [{ type: 'fedavg', rounds: 1, aggregation: { rule: 'median' } }] })),
    /aggregation median needs the plain values/,
  );
  // every other workflow, refused when the job is validated, naming it and why
  const others: [Record<string, unknown>, RegExp][] = [
    [
      { type: 'fedopt', rounds: 1, optimizer: { name: 'fedadam', lr: 0.01 } },
      /fedopt's server optimizer steps on the plain pseudo-gradient/,
    ],
    [{ type: 'scaffold', rounds: 1 }, /scaffold's control variates are updated from the plain results/],
    [{ type: 'cross_site_eval' }, /cross_site_eval sends each site's plain model to the other sites/],
    [{ type: 'swarm', rounds: 1 }, /swarm has a site aggregate the plain results/],
    [{ type: 'custom', module: 'w.ts' }, /a custom workflow needs the plain model on the server/],
  ];
  for (const [w, re] of others)
    assert.throws(
      () => parseJobConfig(job({ workflows: [{ type: 'fedavg', rounds: 1 }, w] })),
      (e: Error) => /workflows\.1: filters\.0 \(he\) works with the fedavg workflow only/.test(e.message) && re.test(e.message),
      String(w.type),
    );
  // FedAvg's client sampling and FedProx's μ change nothing on the server's sum
  assert.equal(
    parseJobConfig(job({ workflows: [{ type: 'fedavg', rounds: 2, sampling: { count: 2, seed: 1 }, proxMu: 0.01 }] })).workflows.length,
    1,
  );
  assert.throws(
    () => parseJobConfig(job({ filters: [{ type: 'he' }, { type: 'quantize', bits: 8 }] })),
    /filters\.1\.type: quantize cannot run with he \(filters\.0\).*ciphertexts do not quantize/,
  );
  assert.throws(
    () => parseJobConfig(job({ filters: [{ type: 'dp_gaussian', clip: 1, noiseMultiplier: 1 }, { type: 'he' }] })),
    /filters\.0\.type: dp_gaussian cannot run with he \(filters\.1\).*DIFF updates/,
  );
  assert.throws(
    () => parseJobConfig(job({ filters: [{ type: 'he', direction: 'result' }] })),
    /filters\.0\.direction: he encrypts results and decrypts tasks/,
  );
  assert.throws(() => parseJobConfig(job({ filters: [{ type: 'he' }, { type: 'he' }] })), /filters\.1\.type: he is already filters\.0/);
});
