// A site's own privacy policy in a real POC deployment (server and site processes from provisioned
// kits): site-1's kit forces 8-bit quantization and excludes `secret` from what it sends, applied
// to a job that asks for no filters; a job asking site-1 for 16-bit results is refused by site-1
// with the reason.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { dictToStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import { dequantizeStream, quantizeStream } from '../../../src/filters/quantize.ts';
import { freePortPair, repo } from '../../helpers/federation.ts';
import { flotilla, killPoc, waitForJobEnd, waitForSites } from '../../helpers/poc.ts';
import { siteValues } from '../../fixtures/jobs/policy/trainer.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-policy-'));
const ws = join(tmp, 'poc');
const job = join(repo, 'test/fixtures/jobs/policy');

after(() => {
  killPoc(ws);
  rmSync(tmp, { recursive: true, force: true });
});

test(
  "site-1's privacy policy (8-bit, secret excluded) applies to a job with no filters; a job asking for 16 bits is refused",
  { timeout: 180_000 },
  async () => {
    const policy = join(tmp, 'privacy.yml');
    writeFileSync(policy, "site-1:\n  filters:\n    - type: quantize\n      bits: 8\n    - type: exclude\n      patterns: ['secret']\n");
    assert.match(
      flotilla('poc', 'prepare', '--clients', '2', '-w', ws, '-p', String(await freePortPair()), '--privacy', policy),
      /POC prepared/,
    );
    const layout = JSON.parse(readFileSync(join(ws, 'poc.json'), 'utf8')) as { server: string; clients: string[]; admin: string };
    const kit = JSON.parse(readFileSync(join(layout.clients[0]!, 'startup', 'fed_client.json'), 'utf8')) as { privacy?: unknown };
    assert.deepEqual(kit.privacy, {
      filters: [
        { type: 'quantize', bits: 8, direction: 'both' },
        { type: 'exclude', patterns: ['secret'], direction: 'result' },
      ],
    });
    assert.match(flotilla('poc', 'start', '-w', ws), /Started server, site-1, site-2/);
    try {
      assert.equal((await waitForSites(layout.admin, 2)).length, 2);

      const id = /Submitted job (\S+)/.exec(flotilla('admin', layout.admin, 'submit', job))?.[1];
      assert.ok(id);
      const status = await waitForJobEnd(layout.admin, id);
      assert.equal(status.state, 'FINISHED', JSON.stringify(status));
      const global = (
        await readSafetensors(join(layout.server, 'workspace', 'jobs', id, 'workspace', 'server', 'global_model.safetensors'))
      ).tensors;
      // secret: only site-2's value reached the server
      assert.deepEqual([...(global.get('secret')!.data as Float32Array)], [222]);
      // w: the mean of site-1's values through blockwise 8-bit (block 256) and site-2's exact values
      const one = siteValues('site-1');
      one.delete('secret');
      const q = (await streamToDict(dequantizeStream(quantizeStream(dictToStream(one), { format: 'int8', blockSize: 256 })))).get('w')!
        .data as Float32Array;
      const exact1 = one.get('w')!.data as Float32Array;
      const two = siteValues('site-2').get('w')!.data as Float32Array;
      const w = global.get('w')!.data as Float32Array;
      let quantized = 0;
      for (let i = 0; i < w.length; i++) {
        assert.ok(Math.abs(w[i]! - Math.fround((q[i]! + two[i]!) / 2)) <= 1e-6 * Math.max(1, Math.abs(w[i]!)), `w[${i}] = ${w[i]}`);
        if (Math.abs(w[i]! - (exact1[i]! + two[i]!) / 2) > 1e-5) quantized++;
      }
      assert.ok(quantized > w.length / 2, `only ${quantized} of ${w.length} values show site-1's quantization`);

      // a job asking site-1 for more than its policy allows: refused by site-1, the job fails with the reason
      const greedy = join(tmp, 'greedy');
      cpSync(job, greedy, { recursive: true });
      writeFileSync(
        join(greedy, 'job.yaml'),
        `${readFileSync(join(job, 'job.yaml'), 'utf8')}filters:\n  - type: quantize\n    bits: 16\n    direction: result\n`,
      );
      const id2 = /Submitted job (\S+)/.exec(flotilla('admin', layout.admin, 'submit', greedy))?.[1];
      assert.ok(id2);
      const refused = await waitForJobEnd(layout.admin, id2);
      assert.equal(refused.state, 'FAILED', JSON.stringify(refused));
      assert.match(
        refused.detail ?? '',
        /site-1.*job refused: site-1's privacy policy sends results quantized to 8 bits at most; the job's filters\.0 asks for 16 bits/,
      );
    } finally {
      flotilla('poc', 'stop', '-w', ws);
    }
  },
);
