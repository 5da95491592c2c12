// Homomorphic encryption in a real POC deployment (server and three site processes from kits
// provisioned with --he): the server's kit and the server process hold no secret key (its memory is
// searched for it), the sites decrypt the encrypted aggregate each task brings, and the final
// model, ciphertexts on the server's disk, decrypts with a site's kit to plain FedAvg within 1e-3.
// site-3's kit holds another key set (same CA, re-signed: a kit from another provisioning run): its
// ciphertexts are refused by the server's sum and the server's aggregate by its decryption, each
// failing that result or task with the reason, while the job goes on with site-1 and site-2.
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SafetensorsFile } from '../../../src/core/safetensors.ts';
import { streamToDict } from '../../../src/core/tensor-stream.ts';
import { HE_KEY, HE_TENSOR, decryptStream, generateHeKeys, heContextFromFile, readHeKeyFile } from '../../../src/filters/index.ts';
import { signKit } from '../../../src/provision/kit.ts';
import { freePortPair, repo } from '../../helpers/federation.ts';
import { flotilla, killPoc, pocPids, waitForJobEnd, waitForSites } from '../../helpers/poc.ts';
import { N, siteWeight, update } from '../../fixtures/jobs/he/trainer.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-he-'));
const ws = join(tmp, 'poc');
const job = join(repo, 'test/fixtures/jobs/he');

after(() => {
  killPoc(ws);
  rmSync(tmp, { recursive: true, force: true });
});

/** Which of `needles` occur in the readable memory of process `pid` (/proc/<pid>/mem; this runs as root in CI). */
function inMemory(pid: number, needles: Buffer[]): boolean[] {
  const found = needles.map(() => false);
  const overlap = Math.max(...needles.map((n) => n.length));
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) r/.exec(line);
      if (!m || line.includes('[vvar') || line.includes('[vsyscall')) continue;
      const end = parseInt(m[2]!, 16);
      const buf = Buffer.alloc(16 << 20);
      for (let pos = parseInt(m[1]!, 16); pos < end; pos += buf.length - overlap) {
        let got = 0;
        try {
          got = readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
        } catch {
          break; // a region that cannot be read (a guard page)
        }
        const view = buf.subarray(0, got);
        needles.forEach((n, i) => (found[i] ||= view.includes(n)));
        if (got < buf.length) break;
      }
    }
  } finally {
    closeSync(fd);
  }
  return found;
}

test(
  'HE: the server holds no secret key and sums ciphertexts; sites decrypt; the aggregate is plain FedAvg within 1e-3; another context is refused both ways',
  { timeout: 300_000 },
  async () => {
    assert.match(flotilla('poc', 'prepare', '--clients', '3', '-w', ws, '-p', String(await freePortPair()), '--he'), /POC prepared/);
    const layout = JSON.parse(readFileSync(join(ws, 'poc.json'), 'utf8')) as { server: string; clients: string[]; admin: string };
    const siteFile = join(layout.clients[0]!, 'startup', 'he_context.json');
    const site = readHeKeyFile(siteFile);
    const server = readHeKeyFile(join(layout.server, 'startup', 'he_context.json'));
    assert.ok(site.secretKey && site.secretKey.length > 100_000);
    assert.equal(server.secretKey, undefined);
    assert.equal(server.fingerprint, site.fingerprint);
    assert.equal(readHeKeyFile(join(layout.clients[1]!, 'startup', 'he_context.json')).secretKey, site.secretKey);
    assert.equal(existsSync(join(layout.admin, 'startup', 'he_context.json')), false);
    // site-3: another key set in its kit, signed again with the project's CA
    const other = await generateHeKeys();
    assert.notEqual(other.site.fingerprint, site.fingerprint);
    const site3 = join(layout.clients[2]!, 'startup');
    writeFileSync(join(site3, 'he_context.json'), `${JSON.stringify(other.site)}\n`);
    const project = readdirSync(ws).find((d) => existsSync(join(ws, d, 'state', 'rootCA.key')));
    assert.ok(project, 'the POC keeps its CA under <project>/state');
    signKit(site3, readFileSync(join(ws, project, 'state', 'rootCA.key'), 'utf8'));

    assert.match(flotilla('poc', 'start', '-w', ws), /Started server, site-1, site-2, site-3/);
    try {
      assert.equal((await waitForSites(layout.admin, 3)).length, 3);
      const id = /Submitted job (\S+)/.exec(flotilla('admin', layout.admin, 'submit', job))?.[1];
      assert.ok(id);
      const status = await waitForJobEnd(layout.admin, id, 180_000);
      assert.equal(status.state, 'FINISHED', JSON.stringify(status));
      // the server survived both refusals: it still answers, with every site connected
      assert.equal((await waitForSites(layout.admin, 3)).length, 3);

      // the server process, after summing two rounds of ciphertexts: its context's fingerprint is in
      // its memory (the search works), no piece of the secret key is (neither its base64 nor its bytes)
      const skBytes = Buffer.from(site.secretKey, 'base64');
      const [fingerprint, b64, raw] = inMemory(pocPids(ws).server!.pid, [
        Buffer.from(site.fingerprint),
        Buffer.from(site.secretKey.slice(4000, 4064)),
        skBytes.subarray(4000, 4064),
      ]);
      assert.equal(fingerprint, true, "the search found not even the server's own fingerprint");
      assert.equal(b64, false, 'the secret key (base64) is in the server process');
      assert.equal(raw, false, 'the secret key (bytes) is in the server process');

      const serverDir = join(layout.server, 'workspace', 'jobs', id, 'workspace', 'server');
      const weights = [siteWeight('site-1'), siteWeight('site-2')];
      const fedavg = (round: number, base: Map<string, Float64Array>): Map<string, Float64Array> =>
        new Map(
          [...base].map(([name, b]) => {
            const us = ['site-1', 'site-2'].map((s) => update(s, round).get(name)!.data as Float32Array);
            return [name, b.map((v, i) => v + (weights[0]! * us[0]![i]! + weights[1]! * us[1]![i]!) / (weights[0]! + weights[1]!))];
          }),
        );
      const g1 = fedavg(
        0,
        new Map([
          ['w', new Float64Array(N)],
          ['b', new Float64Array(7)],
        ]),
      );
      const g2 = fedavg(1, g1);

      // round 1's tasks: the sites decrypted round 0's encrypted aggregate
      const summary = JSON.parse(readFileSync(join(serverDir, 'summary.json'), 'utf8')) as {
        rounds: {
          sites: string[];
          failures: Record<string, string>;
          siteMetrics: Record<string, { received_sum: number; received_w0: number }>;
        }[];
      };
      // site-3's round-0 result (ciphertexts of its own key set) failed at the server's sum; its
      // round-1 task (the aggregate under the federation's key set) failed at its decryption
      assert.deepEqual(
        summary.rounds.map((r) => [...r.sites].sort()),
        [
          ['site-1', 'site-2'],
          ['site-1', 'site-2'],
        ],
      );
      assert.match(summary.rounds[0]!.failures['site-3'] ?? '', /encrypted with another HE context.*different provisioning runs/);
      assert.match(summary.rounds[1]!.failures['site-3'] ?? '', /bad task payload: .*another HE context/);
      const sum1 = [...g1.values()].reduce((s, a) => s + a.reduce((x, y) => x + y, 0), 0);
      for (const s of ['site-1', 'site-2']) {
        const m = summary.rounds[1]!.siteMetrics[s]!;
        assert.ok(Math.abs(m.received_w0 - g1.get('w')![0]!) < 1e-3, `${s} received w[0] = ${m.received_w0}`);
        assert.ok(Math.abs(m.received_sum - sum1) < 1e-3 * N, `${s} received a model summing to ${m.received_sum}, not ${sum1}`);
      }

      // the final model on the server's disk is ciphertext; site-1's kit decrypts it
      const file = await SafetensorsFile.open(join(serverDir, 'global_model.safetensors'));
      try {
        const stream = file.stream();
        assert.ok(stream.header.metadata[HE_KEY]);
        assert.deepEqual(
          stream.header.tensors.map((t) => [t.name, t.dtype]),
          [[HE_TENSOR, 'U8']],
        );
        const plain = await streamToDict(decryptStream(stream, await heContextFromFile(siteFile)));
        let worst = 0;
        for (const [name, want] of g2) {
          const got = plain.get(name)!.data as Float32Array;
          assert.equal(got.length, want.length);
          for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
        }
        assert.ok(worst < 1e-3, `largest error against plain FedAvg ${worst}`);
      } finally {
        await file.close();
      }
    } finally {
      flotilla('poc', 'stop', '-w', ws);
    }
  },
);
