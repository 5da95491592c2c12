// The resource report a soak run reads (FLOTILLA_RESOURCE_REPORT): lines of this process's own handles and memory.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  RESOURCE_REPORT_ENV,
  RESOURCE_REPORT_GC_ENV,
  RESOURCE_REPORT_MS_ENV,
  ResourceLineSchema,
  startResourceReport,
} from '../../../src/util/resource-report.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-resreport-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('with FLOTILLA_RESOURCE_REPORT set, the process appends a line of its handles and memory at each interval', async () => {
  const dir = join(tmp, 'on');
  const stop = startResourceReport({ [RESOURCE_REPORT_ENV]: dir, [RESOURCE_REPORT_MS_ENV]: '20' });
  const extra = setTimeout(() => undefined, 10_000); // a timer of ours the report must count
  await new Promise((r) => setTimeout(r, 150));
  stop();
  clearTimeout(extra);
  const lines = readFileSync(join(dir, `${process.pid}.jsonl`), 'utf8')
    .trimEnd()
    .split('\n');
  assert.ok(lines.length >= 3, `one line at start and one per 20 ms (${lines.length})`);
  const last = ResourceLineSchema.parse(JSON.parse(lines.at(-1)!));
  assert.equal(last.pid, process.pid);
  assert.ok((last.resources.Timeout ?? 0) >= 1, `our timer is counted: ${JSON.stringify(last.resources)}`);
  assert.equal(
    last.active,
    Object.values(last.resources).reduce((a, b) => a + b, 0),
  );
  assert.ok(last.rss > last.heapUsed && last.heapUsed > 0);
  assert.equal(last.gc, false, 'no collection asked for');
  const n = lines.length;
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(
    readFileSync(join(dir, `${process.pid}.jsonl`), 'utf8')
      .trimEnd()
      .split('\n').length,
    n,
    'stop() ends the report',
  );
});

test('with FLOTILLA_RESOURCE_REPORT_GC=1 and gc exposed, a line is measured after a full collection: garbage is not counted', () => {
  setFlagsFromString('--expose-gc'); // what --expose-gc gives a process started with it
  const g = globalThis as { gc?: () => void };
  const had = g.gc;
  g.gc = runInNewContext('gc') as () => void;
  try {
    let garbage: Uint8Array | null = new Uint8Array(64 << 20).fill(1);
    const held = process.memoryUsage().arrayBuffers;
    assert.ok(held >= garbage.length);
    garbage = null;
    const dir = join(tmp, 'gc');
    startResourceReport({ [RESOURCE_REPORT_ENV]: dir, [RESOURCE_REPORT_GC_ENV]: '1', [RESOURCE_REPORT_MS_ENV]: '100000' })();
    const line = ResourceLineSchema.parse(JSON.parse(readFileSync(join(dir, `${process.pid}.jsonl`), 'utf8')));
    assert.equal(line.gc, true);
    assert.ok(line.arrayBuffers < held - (32 << 20), `the dropped 64 MiB are not counted (${line.arrayBuffers} of ${held} bytes)`);
  } finally {
    g.gc = had;
  }
});

test('without the variable nothing is written; a bad interval is refused naming the variable', () => {
  startResourceReport({})();
  assert.deepEqual(
    readdirSync(tmp).filter((f) => f !== 'on' && f !== 'gc'),
    [],
  );
  assert.throws(
    () => startResourceReport({ [RESOURCE_REPORT_ENV]: join(tmp, 'bad'), [RESOURCE_REPORT_MS_ENV]: 'soon' }),
    /FLOTILLA_RESOURCE_REPORT_MS must be a number/,
  );
  assert.ok(!existsSync(join(tmp, 'bad')));
});
