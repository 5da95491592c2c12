// Property tests over every parser of untrusted input (test/helpers/fuzz-targets.ts): valid inputs,
// mutated ones and random bytes must be accepted or refused with the parser's own typed error,
// never crash it otherwise. A few hundred cases each here; scripts/fuzz.ts runs 100,000 and more.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { TARGETS, cleanupFuzz, jsonText, mutateBytes, mutateJson, runCase } from '../../helpers/fuzz-targets.ts';

after(cleanupFuzz);

const RUNS = Number(process.env.FUZZ_RUNS ?? 100);

for (const t of TARGETS) {
  test(`fuzz ${t.name}: no crash but its typed error`, async () => {
    await fc.assert(
      fc.asyncProperty(t.arbitrary, (input) => runCase(t, input)),
      { numRuns: RUNS },
    );
  });
}

test('fuzz mutators: byte and JSON edits do what they say', () => {
  assert.deepEqual([...mutateBytes(Buffer.from([1, 2, 3]), [{ op: 'truncate', at: 1 }])], [1]);
  assert.deepEqual([...mutateBytes(Buffer.from([1, 2, 3]), [{ op: 'flip', at: 0, bit: 1 }])], [3, 2, 3]);
  assert.deepEqual(mutateJson({ a: 1, b: [2] }, [{ op: 'delete', at: 1 }]), { b: [2] });
  assert.equal(jsonText(mutateJson({ a: 1 }, [{ op: 'deep', at: 1, depth: 3, array: true }])), '{"a":[[[0]]]}');
  assert.equal(jsonText(mutateJson({ a: 1 }, [{ op: 'deep', at: 0, depth: 2, array: false }])), '{"a":{"a":0}}');
});
