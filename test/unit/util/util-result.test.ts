import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { attempt, err, ok, unwrap } from '../../../src/util/result.ts';
import { describeZodError, zodIssueLines } from '../../../src/util/zod-error.ts';

test('result: ok carries the value, err the reason, unwrap throws the reason', async () => {
  const good = ok(3);
  assert.equal(good.ok && good.value, 3);
  const bad = err('disk full');
  assert.equal(!bad.ok && bad.reason, 'disk full');
  assert.equal(unwrap(good), 3);
  assert.throws(() => unwrap(bad), /^Error: disk full$/);
  const typed = err(new RangeError('too big'));
  assert.throws(() => unwrap(typed), RangeError);
  assert.deepEqual(await attempt(async () => 5), { ok: true, value: 5 });
  assert.deepEqual(
    await attempt(async () => {
      throw new Error('nope');
    }),
    { ok: false, reason: 'nope' },
  );
});

test('zod-error: one wording, fields as dotted paths, unknown keys named', () => {
  const S = z.strictObject({ a: z.strictObject({ b: z.number() }), c: z.string() });
  const r = S.safeParse({ a: { b: 'x' }, c: 1, d: true });
  assert.ok(!r.success);
  const line = describeZodError(r.error);
  assert.match(line, /a\.b: /);
  assert.match(line, /c: /);
  assert.match(line, /\(top level\): unknown key\(s\) "d"/);
  assert.equal(zodIssueLines(r.error).split('\n').length, 3);
  assert.ok(
    zodIssueLines(r.error)
      .split('\n')
      .every((l) => l.startsWith('  ')),
  );
});
