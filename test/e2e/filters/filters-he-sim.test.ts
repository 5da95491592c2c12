// The he filter in the simulator (site workers, a fresh key set per run): the server's final model is
// ciphertext, the sites' context decrypts it to plain FedAvg within 1e-3; the sites got round 0's
// aggregate decrypted.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SafetensorsFile, readSafetensors } from '../../../src/core/safetensors.ts';
import { streamToDict } from '../../../src/core/tensor-stream.ts';
import { HE_TENSOR, decryptStream, heContextFromFile, readHeKeyFile } from '../../../src/filters/index.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { repo } from '../../helpers/federation.ts';
import { expectedGlobal } from '../../fixtures/jobs/he/trainer.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-he-sim-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('he in the simulator: encrypted global model, decrypted by the sites to plain FedAvg within 1e-3', { timeout: 120_000 }, async () => {
  const ws = join(tmp, 'sim');
  const sites = ['site-1', 'site-2', 'site-3'];
  const r = await simulate({ jobDir: join(repo, 'test/fixtures/jobs/he'), clients: 3, threads: 2, workspace: ws });
  assert.equal(r.rounds.length, 2);
  assert.deepEqual(r.rounds[1]!.sites, sites);
  assert.deepEqual([...r.model!.keys()], [HE_TENSOR], 'the server holds ciphertexts only');
  const g1 = expectedGlobal(sites, 1);
  for (const s of sites) assert.ok(Math.abs(r.rounds[1]!.siteMetrics[s]!.received_w0! - g1.get('w')![0]!) < 1e-3);
  const siteFile = join(ws, 'he', 'he_context.json');
  assert.ok(readHeKeyFile(siteFile).secretKey);
  const file = await SafetensorsFile.open(join(ws, 'server', 'global_model.safetensors'));
  try {
    const plain = await streamToDict(decryptStream(file.stream(), await heContextFromFile(siteFile)));
    let worst = 0;
    for (const [name, want] of expectedGlobal(sites, 2)) {
      const got = plain.get(name)!.data as Float32Array;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    }
    assert.ok(worst < 1e-3, `largest error ${worst}`);
  } finally {
    await file.close();
  }
  // the CLI does the same (a site's kit or its he_context.json), and names a server's context as unable to
  const out = join(tmp, 'plain.safetensors');
  const cli = (...args: string[]): string =>
    execFileSync(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], {
      cwd: repo,
      encoding: 'utf8',
      stdio: 'pipe',
    });
  assert.match(cli('decrypt', join(ws, 'server', 'global_model.safetensors'), '--context', siteFile, '-o', out), /Decrypted .* 2 tensors/);
  const w = (await readSafetensors(out)).tensors.get('w')!.data as Float32Array;
  assert.ok(Math.abs(w[0]! - expectedGlobal(sites, 2).get('w')![0]!) < 1e-3);
  const { secretKey: _, ...server } = readHeKeyFile(siteFile);
  const serverFile = join(tmp, 'server_context.json');
  writeFileSync(serverFile, JSON.stringify(server));
  assert.throws(
    () => cli('decrypt', join(ws, 'server', 'global_model.safetensors'), '--context', serverFile, '-o', out),
    /has no secret key \(a server's context cannot decrypt\)/,
  );
});
