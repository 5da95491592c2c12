// The soak run's summaries and verdict (scripts/soak-stats.ts): a leak is called one, a flat series is not.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Sample, summarize, summarizeProcess, verdict } from '../../../scripts/soak-stats.ts';

const sample = (round: number, rssMB: number, fds = 30): Sample => ({
  t: round,
  round,
  rssMB,
  fds,
  heapMB: 30,
  externalMB: 2,
  activeHandles: 4,
  handleTypes: { Timeout: 1, TCPSocketWrap: 3 },
});

test('summarize: first, last, min, max, least-squares slope per 100 rounds, growth between the first and last thirds', () => {
  const s = summarize([0, 10, 20, 30, 40, 50].map((r) => ({ round: r, v: 100 + r / 2 })))!;
  assert.deepEqual(s, { first: 100, last: 125, min: 100, max: 125, slopePer100Rounds: 50, growth: 20 });
  assert.equal(summarize([{ round: 3, v: 1 }])!.slopePer100Rounds, null, 'one round: no slope');
  assert.equal(summarize([]), null);
});

test('verdict: warm-up rounds are left out; growing RSS or descriptors are not flat; too few samples are not judged', () => {
  const rounds = Array.from({ length: 40 }, (_, i) => i * 5);
  // a warm-up climb, then flat with noise
  const flat = rounds.map((r) => sample(r, r < 50 ? 100 + r : 150 + (r % 3)));
  const leaky = rounds.map((r) => sample(r, 150 + r * 0.1, 30 + Math.floor(r / 20)));
  const p = { server: summarizeProcess(1, flat, 50), 'site-1': summarizeProcess(2, leaky, 50) };
  assert.equal(p.server.samples, 30);
  const v = verdict(p);
  assert.equal(v.flat, false);
  assert.ok(
    v.exceeded.some((e) => e.startsWith('site-1 rssMB slope 10 per 100 rounds > 2')),
    v.exceeded.join('; '),
  );
  assert.ok(
    v.exceeded.some((e) => e.startsWith('site-1 fds growth')),
    v.exceeded.join('; '),
  );
  assert.ok(!v.exceeded.some((e) => e.startsWith('server')), 'the warm-up climb is not counted');
  assert.equal(verdict({ server: p.server }).flat, true);
  assert.equal(verdict({ server: summarizeProcess(1, flat.slice(0, 12), 50) }).flat, null, '2 samples after warm-up');
});

test('verdict: a process that reports nothing about itself (a trainer process) is judged on RSS and descriptors only', () => {
  const rounds = Array.from({ length: 20 }, (_, i) => i * 10);
  const silent = (rss: (r: number) => number): Sample[] =>
    rounds.map((r) => ({ ...sample(r, rss(r)), heapMB: null, externalMB: null, activeHandles: null, handleTypes: null }));
  const flat = summarizeProcess(
    3,
    silent(() => 90),
    0,
  );
  assert.equal(flat.reported, false);
  assert.deepEqual(verdict({ 'site-1/trainer': flat }), { ...verdict({}), flat: true });
  const leaky = verdict({
    'site-1/trainer': summarizeProcess(
      3,
      silent((r) => 90 + r / 10),
      0,
    ),
  });
  assert.equal(leaky.flat, false);
  assert.ok(
    leaky.exceeded.some((e) => e.startsWith('site-1/trainer rssMB slope 10 per 100 rounds')),
    leaky.exceeded.join('; '),
  );
});
