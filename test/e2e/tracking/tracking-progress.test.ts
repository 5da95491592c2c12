// The simulator's terminal progress from the first second: the workflow reports each round's start,
// and the progress lines say per site what it does (receiving the model, training with the last value
// it logged, sending its result, done).
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { RoundProgress } from '../../../src/cli/round-progress.ts';
import { RoundTable } from '../../../src/cli/round-table.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { repo } from '../../helpers/federation.ts';

const MB = 2 ** 20;

function sink(): { stream: Writable; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  return { stream, text: () => text };
}

test('each round reports its start (0 results) before any model moves, so progress shows from its first second', async () => {
  const events: string[] = [];
  await simulate({
    jobDir: join(repo, 'test/fixtures/jobs/tracked'),
    clients: 2,
    threads: 0,
    workspace: mkdtempSync(join(tmpdir(), 'flotilla-progress-')),
    tracking: false,
    onProgress: (p) => events.push(`progress ${p.round} ${p.done}/${p.expected}`),
    onTransfer: (t) => events.push(`transfer ${t.direction}`),
    onRound: (s) => events.push(`row ${s.round}`),
  });
  for (const round of [0, 1]) {
    const start = events.indexOf(`progress ${round} 0/2`);
    const from = round === 0 ? -1 : events.indexOf(`row ${round - 1}`);
    assert.ok(start > from, `round ${round} reports its start: ${events.join(', ')}`);
    const firstTransfer = events.findIndex((e, i) => i > from && e.startsWith('transfer'));
    assert.ok(start < firstTransfer, `round ${round}: started (${start}) before its first transfer (${firstTransfer})`);
  }
});

test('the lines: round header with bytes and ETA, each site receiving, training with its last log, sending, done', () => {
  const p = new RoundProgress(2, sink().stream, true);
  p.progress(0, 3);
  p.transfer({ peer: 'site-1', stream: 1, direction: 'send', bytes: 128 * MB, total: 512 * MB });
  p.transfer({ peer: 'site-2', stream: 1, direction: 'send', bytes: 512 * MB, total: 512 * MB, done: true });
  p.logged('site-2', 'loss', 0.25, 12);
  p.transfer({ peer: 'site-10', stream: 1, direction: 'send', bytes: 512 * MB, total: 512 * MB, done: true });
  p.transfer({ peer: 'site-10', stream: 2, direction: 'receive', bytes: 256 * MB, total: 512 * MB });
  let lines = p.render();
  assert.match(lines[0]!, /^ round 3 \[░+\] 0\/3 sites \| 1\.4 GB moved, .*\/s, ETA \d+ s \| \d+\.\d s$/);
  assert.match(lines[1]!, /^ {3}site-1 +\[█{5}░{15}\] model ← 128\.0 MB of 512\.0 MB$/);
  assert.match(lines[2]!, /^ {3}site-2 +training \d+\.\d s \| loss 0\.2500 \(step 12\)$/);
  assert.match(lines[3]!, /^ {3}site-10 +\[█{10}░{10}\] result → 256\.0 MB of 512\.0 MB$/, 'sites in numeric order');
  p.transfer({ peer: 'site-10', stream: 2, direction: 'receive', bytes: 512 * MB, total: 512 * MB, done: true });
  p.progress(1, 3);
  lines = p.render();
  assert.match(lines[0]!, /1\/3 sites/);
  assert.match(lines[3]!, /site-10 +done$/);
  p.stop();

  // many sites: 8 lines, the rest summed up by what they do
  const many = new RoundProgress(0, sink().stream, true);
  for (let i = 1; i <= 12; i++) many.transfer({ peer: `site-${i}`, stream: 1, direction: 'send', bytes: MB, total: 2 * MB, done: i > 10 });
  lines = many.render();
  assert.equal(lines.length, 1 + 8 + 1);
  assert.equal(lines[9], '   … 4 more sites: 2 receiving, 2 training');
  many.stop();
});

test('the round table draws the progress on its stream while a round runs and clears it for the row', async () => {
  const out: string[] = [];
  const s = sink();
  const table = new RoundTable((l) => out.push(l), { progressStream: s.stream, forceProgress: true });
  table.progress({ round: 0, done: 0, expected: 2 });
  table.transfer({ peer: 'site-1', stream: 1, direction: 'send', bytes: MB, total: 4 * MB });
  await new Promise((r) => setTimeout(r, 600));
  assert.match(s.text(), /round 1 \[.*\] 0\/2 sites/);
  assert.match(s.text(), /site-1 +\[.*\] model ← 1\.0 MB of 4\.0 MB/);
  assert.equal(out.length, 0, 'no row yet');
  table.row({ round: 0, totalRounds: 2, sites: ['site-1'], siteMetrics: {}, metrics: { loss: 1 }, failures: {}, seconds: 1 });
  assert.match(out.join('\n'), /1\/2 +1 +1\.0000/);
});
