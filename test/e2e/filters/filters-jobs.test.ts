// Filters in jobs: job.yaml `filters:` validated with the field named, the chain at its four points in
// the simulator (a job's own filter module, 8-bit quantization both ways, an excluded tensor), and a
// filter failing on one site's result failing that result only.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { checkJob } from '../../../src/runtime/job-check.ts';
import { parseJobConfig } from '../../../src/runtime/job-config.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { repo } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-filters-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const base = {
  name: 'j',
  minClients: 1,
  model: { module: 'm.ts' },
  workflows: [{ type: 'fedavg', rounds: 1 }],
  executor: { trainer: { module: 't.ts' } },
};
const cases: [string, unknown[], RegExp][] = [
  ['bits out of range', [{ type: 'quantize', bits: 3 }], /filters\.0\.bits: must be 16, 8 or 4/],
  ['block size not a power of two', [{ type: 'quantize', bits: 8, blockSize: 100 }], /filters\.0\.blockSize: must be a power of two/],
  [
    'format of other bits',
    [
      { type: 'exclude', patterns: ['a'] },
      { type: 'quantize', bits: 4, format: 'bfloat16' },
    ],
    /filters\.1\.format: 4 bits take nf4 or fp4/,
  ],
  [
    'unknown type',
    [{ type: 'rot13' }],
    /filters\.0(\.type)?: unknown filter type: use one of quantize, exclude, dp_gaussian, percentile_privacy, svt_privacy, he, custom/,
  ],
  ['bad regex', [{ type: 'exclude', patterns: ['/a(/'] }], /filters\.0\.patterns\.0: not a valid regular expression/],
  ['unknown key', [{ type: 'quantize', bits: 8, bist: 4 }], /filters\.0: unknown key\(s\) "bist"/],
  ['custom without direction', [{ type: 'custom', module: 'f.ts' }], /filters\.0\.direction/],
  ['block size below 16', [{ type: 'quantize', bits: 4, blockSize: 8 }], /filters\.0\.blockSize: must be between 16 and 65536/],
  ['a block size for 16 bits', [{ type: 'quantize', bits: 16, blockSize: 64 }], /filters\.0\.blockSize: 16-bit floats have no blocks/],
  ['σ ≤ 0', [{ type: 'dp_gaussian', clip: 1, noiseMultiplier: 0 }], /filters\.0\.noiseMultiplier: must be > 0/],
  ['svt ε ≤ 0', [{ type: 'svt_privacy', epsilon: -1 }], /filters\.0\.epsilon: must be > 0/],
  ['percentile γ ≤ 0', [{ type: 'percentile_privacy', gamma: 0 }], /filters\.0\.gamma: must be > 0/],
  ['an empty pattern list', [{ type: 'exclude', patterns: [] }], /filters\.0\.patterns/],
  [
    'custom module outside the job',
    [{ type: 'custom', module: '../f.ts', direction: 'result' }],
    /filters\.0\.module: must be a path inside/,
  ],
];
for (const [what, filters, re] of cases)
  test(`job.yaml filters: ${what} is refused naming the field`, () => {
    assert.throws(() => parseJobConfig({ ...base, filters }, 'job.yaml'), re);
  });

test("flotilla validate loads a job's filter modules: args against the module's schema, a missing export, named", async () => {
  const dir = join(tmp, 'validate');
  mkdirSync(dir);
  const example = join(repo, 'examples/custom-filter');
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(join(dir, 'trainer.ts'), `export * from ${JSON.stringify(join(example, 'trainer.ts'))};\n`);
  writeFileSync(join(dir, 'filter.ts'), `export { default } from ${JSON.stringify(join(example, 'filter.ts'))};\n`);
  const config = (filter: Record<string, unknown>) =>
    writeFileSync(
      join(dir, 'job.json'),
      JSON.stringify({
        name: 'v',
        minClients: 1,
        model: { module: 'trainer.ts', export: 'initialModel' },
        workflows: [{ type: 'fedavg', rounds: 1 }],
        executor: { trainer: { module: 'trainer.ts', factory: 'createTrainer' } },
        filters: [
          { type: 'exclude', patterns: ['a'] },
          { type: 'custom', module: 'filter.ts', direction: 'result', ...filter },
        ],
      }),
    );
  config({ args: { limit: 1.05 } });
  assert.equal((await checkJob(dir)).config.filters.length, 2);
  config({ args: { limit: -1 } });
  await assert.rejects(checkJob(dir), /job\.json: filters\.1\.args\.limit: .*\(the schema filter\.ts exports\)/);
  config({ args: { limit: 1, extra: true } });
  await assert.rejects(checkJob(dir), /filters\.1\.args: .*extra/);
  config({ export: 'clamp', args: { limit: 1 } });
  await assert.rejects(checkJob(dir), /job\.json: filters\.1\.module: filter\.ts has no export "clamp" \(it exports default\)/);
});

test('examples/custom-filter: its own filter, 8-bit both ways and an excluded tensor, in the simulator', async () => {
  const ws = join(tmp, 'example');
  const r = await simulate({ jobDir: join(repo, 'examples/custom-filter'), clients: 2, threads: 0, workspace: ws });
  assert.equal(r.rounds.length, 3);
  const g = (await readSafetensors(join(ws, 'server/global_model.safetensors'))).tensors;
  // FedAvg of sites pulling toward 1 and 1.1 at rate 0.5 from 0: 0.525, 0.7875, 0.91875 (constant blocks quantize exactly)
  const w = g.get('w')!.data as Float32Array;
  assert.equal(g.get('w')!.dtype, 'F32');
  for (const x of w) assert.ok(Math.abs(x - 0.91875) < 1e-6, String(x));
  // no site sent local.stats: the global keeps the initial value
  assert.deepEqual([...(g.get('local.stats')!.data as Float32Array)], [0, 0]);
});

test("a filter failing on one site's result (at the site, or at the server) fails that result; the round goes on", async () => {
  const ws = join(tmp, 'flaky');
  const r = await simulate({ jobDir: join(repo, 'test/fixtures/jobs/filters'), clients: 3, threads: 0, workspace: ws });
  assert.equal(r.rounds.length, 2);
  for (const round of r.rounds) {
    assert.deepEqual(round.sites, ['site-1']);
    assert.match(round.failures['site-2']!, /filters\.0 \(flaky\): refusing to send for site-2/);
    assert.match(round.failures['site-3']!, /filters\.0 \(flaky\): refusing site-3's result/);
  }
  // site-1 alone, target 1, through 4-bit NF4: 0.5 then 0.75 (NF4's ±1 levels are exact for constant blocks)
  const g = (await readSafetensors(join(ws, 'server/global_model.safetensors'))).tensors;
  for (const x of g.get('w')!.data as Float32Array) assert.ok(Math.abs(x - 0.75) < 1e-6, String(x));
});
