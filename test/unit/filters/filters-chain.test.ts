// The filter chain as a site and the server build it: exclusion in either direction (globs and
// regular expressions), a site's privacy policy after the job's filters (a job's own filter that
// sends an excluded tensor again, or a job quantizer told to spare a tensor, cannot undo it), and
// the jobs a site's policy refuses, with the reason.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';
import { dictToStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import type { FLModelInfo } from '../../../src/core/fl-model.ts';
import { FilterChain, PrivacyPolicySchema, QUANTIZED_KEY, builtinFilter, entryFor, policyRefusal } from '../../../src/filters/index.ts';
import type { FilterSpec } from '../../../src/filters/index.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { parseJobConfig } from '../../../src/runtime/job-config.ts';
import { loadJobFilters } from '../../../src/runtime/filters.ts';
import { repo } from '../../helpers/federation.ts';

const info = (): FLModelInfo => ({ paramsType: 'FULL', metrics: {}, meta: {}, currentRound: 0, totalRounds: 1 });
const model = (): TensorDict =>
  new Map([
    ['encoder.layers.0.w', f32([4], [1, 2, 3, 4])],
    ['encoder.layers.7.w', f32([4], [5, 6, 7, 8])],
    ['head.bias', f32([2], [9, 10])],
    ['local.stats', f32([2], [11, 12])],
  ]);
const base = {
  name: 'j',
  minClients: 1,
  model: { module: 'trainer.ts', export: 'initialModel' },
  workflows: [{ type: 'fedavg', rounds: 1 }],
  executor: { trainer: { module: 'trainer.ts', factory: 'createTrainer' } },
};
const chainOf = (filters: unknown[]): FilterChain =>
  new FilterChain(
    parseJobConfig({ ...base, filters }).filters.map((s, i) =>
      entryFor(s, `filters.${i} (${s.type})`, builtinFilter(s as Exclude<FilterSpec, { type: 'custom' }>)),
    ),
  );
const names = async (chain: FilterChain, half: 'send' | 'receive', direction: 'task' | 'result', taskName = 'train') => [
  ...(await streamToDict(chain[half]({ info: info(), params: dictToStream(model()) }, { site: 's', taskName, direction }).params)).keys(),
];

test('exclude acts in the direction asked (task, result or both), by glob or regular expression, for the tasks named', async () => {
  const onTasks = chainOf([{ type: 'exclude', patterns: ['/^encoder\\.layers\\.[0-5]\\./', 'local.*'], direction: 'task' }]);
  // the server's sending half drops them from tasks; results leave the site whole
  assert.deepEqual(await names(onTasks, 'send', 'task'), ['encoder.layers.7.w', 'head.bias']);
  assert.deepEqual(await names(onTasks, 'send', 'result'), [...model().keys()]);
  // the default direction is result: the site's sending half
  const onResults = chainOf([{ type: 'exclude', patterns: ['*.bias'] }]);
  assert.deepEqual(await names(onResults, 'send', 'result'), ['encoder.layers.0.w', 'encoder.layers.7.w', 'local.stats']);
  assert.deepEqual(await names(onResults, 'send', 'task'), [...model().keys()]);
  const both = chainOf([{ type: 'exclude', patterns: ['?ocal.*'], direction: 'both', tasks: ['train'] }]);
  for (const d of ['task', 'result'] as const) assert.ok(!(await names(both, 'send', d)).includes('local.stats'), d);
  assert.ok((await names(both, 'send', 'result', 'validate')).includes('local.stats'), 'only the tasks named');
  // a glob's dot is a dot and `*` spans dots: 'encoder*w' matches both layers, 'encoder.w' neither
  assert.deepEqual(await names(chainOf([{ type: 'exclude', patterns: ['encoder*w'] }]), 'send', 'result'), ['head.bias', 'local.stats']);
  assert.equal((await names(chainOf([{ type: 'exclude', patterns: ['encoder.w'] }]), 'send', 'result')).length, 4);
});

test("a job's filters cannot undo the site's policy: an excluded tensor sent again, a tensor spared from quantization", async () => {
  const job = {
    dir: join(repo, 'test/fixtures/jobs/policy'),
    file: 'job.yaml',
    config: parseJobConfig({
      ...base,
      filters: [
        // runs first: appends `secret` to what the site sends
        { type: 'custom', module: 'undo.ts', direction: 'result', args: { value: 111 } },
        // 4 bits (the policy allows that: fewer than its 8) for everything but w, which it would send in float32
        { type: 'quantize', bits: 4, exclude: ['w'], direction: 'result' },
      ],
    }),
  };
  const policy = PrivacyPolicySchema.parse({
    filters: [
      { type: 'quantize', bits: 8 },
      { type: 'exclude', patterns: ['secret'] },
    ],
  });
  assert.equal(policyRefusal('site-1', job.config.filters, policy), null);
  const result = (): TensorDict =>
    new Map([
      [
        'w',
        f32(
          [300],
          Array.from({ length: 300 }, (_, i) => Math.sin(i)),
        ),
      ],
      [
        'v',
        f32(
          [64],
          Array.from({ length: 64 }, (_, i) => Math.cos(i)),
        ),
      ],
    ]);
  const ctx = { site: 'site-1', taskName: 'train', direction: 'result' } as const;

  // without the policy the job's filter does send `secret` (through the job's NF4), and w leaves in float32
  const alone = (await loadJobFilters(job)).send({ info: info(), params: dictToStream(result()) }, ctx).params;
  assert.deepEqual(
    alone.header.tensors.map((t) => [t.name, t.dtype]),
    [
      ['w', 'F32'],
      ['v', 'U8'],
      ['secret', 'U8'],
    ],
  );
  const out = (await loadJobFilters(job, policy)).send({ info: info(), params: dictToStream(result()) }, ctx).params;
  assert.deepEqual(
    out.header.tensors.map((t) => [t.name, t.dtype]),
    [
      ['w', 'U8'],
      ['v', 'U8'],
    ],
  );
  // w by the policy's blockwise 8-bit, v by the job's NF4 (fewer bits than the policy asks: kept)
  const q = JSON.parse(out.header.metadata[QUANTIZED_KEY]!) as Record<string, { f: string }>;
  assert.deepEqual(Object.fromEntries(Object.entries(q).map(([k, e]) => [k, e.f])), { v: 'nf4', w: 'int8' });
  const sent = await streamToDict(out);
  // two blocks of 256: a float32 absmax each, then one byte per value
  assert.equal(sent.get('w')!.data.byteLength, 2 * 4 + 300);
});

test('a site refuses, with the reason, a job whose result filters ask for less than its policy, and he jobs', () => {
  const policy = PrivacyPolicySchema.parse({ filters: [{ type: 'quantize', bits: 8, tasks: ['train'] }] });
  const filters = (fs: unknown[]) => parseJobConfig({ ...base, filters: fs }).filters;
  assert.equal(policyRefusal('site-1', filters([]), policy), null);
  assert.equal(policyRefusal('site-1', filters([{ type: 'quantize', bits: 4 }]), policy), null);
  // 16 bits on tasks only: what the site sends is not asked for
  assert.equal(policyRefusal('site-1', filters([{ type: 'quantize', bits: 16, direction: 'task' }]), policy), null);
  // on other tasks than the policy's
  assert.equal(policyRefusal('site-1', filters([{ type: 'quantize', bits: 16, tasks: ['validate'] }]), policy), null);
  assert.match(
    policyRefusal(
      'site-1',
      filters([
        { type: 'exclude', patterns: ['a'] },
        { type: 'quantize', bits: 16 },
      ]),
      policy,
    )!,
    /^site-1's privacy policy sends results quantized to 8 bits at most; the job's filters\.1 asks for 16 bits: lower its bits to 8/,
  );
  // he: the policy could not apply to ciphertexts of the full model
  for (const p of [
    policy,
    PrivacyPolicySchema.parse({ filters: [{ type: 'exclude', patterns: ['secret'] }] }),
    PrivacyPolicySchema.parse({ filters: [{ type: 'dp_gaussian', clip: 1, noiseMultiplier: 1 }] }),
  ])
    assert.match(
      policyRefusal('site-2', filters([{ type: 'he' }]), p)!,
      new RegExp(`^site-2's privacy policy \\(filters\\.0: ${p.filters[0]!.type}\\) cannot apply to the job's filters\\.0 \\(he\\)`),
    );
  assert.equal(policyRefusal('site-2', filters([{ type: 'he' }]), undefined), null);
});

test("project.yml: a site's privacy policy is validated with the participant and field named", () => {
  const project = (privacy: unknown) => ({
    name: 'p',
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1 },
      { type: 'client', name: 'site-1', org: 'a', privacy },
    ],
  });
  assert.deepEqual(parseProject(project({ filters: [{ type: 'quantize', bits: 8 }] })).participants[1], {
    type: 'client',
    name: 'site-1',
    org: 'a',
    privacy: { filters: [{ type: 'quantize', bits: 8, direction: 'both' }] },
  });
  for (const [privacy, re] of [
    [{ filters: [{ type: 'quantize', bits: 5 }] }, /participants\.1\.privacy\.filters\.0\.bits: must be 16, 8 or 4/],
    [
      { filters: [{ type: 'exclude', patterns: ['x'], direction: 'task' }] },
      /participants\.1\.privacy\.filters\.0\.direction: a site's policy filters what it sends/,
    ],
    [{ filters: [{ type: 'he' }] }, /participants\.1\.privacy\.filters\.0.*a privacy policy takes the built-in filters/],
    [{ filters: [{ type: 'dp_gaussian', clip: 1, epsilon: 0, rounds: 2 }] }, /participants\.1\.privacy\.filters\.0\.epsilon: must be > 0/],
    [{ filters: [] }, /participants\.1\.privacy\.filters/],
  ] as const)
    assert.throws(() => parseProject(project(privacy), 'project.yml'), re, JSON.stringify(privacy));
});
