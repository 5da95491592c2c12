/**
 * Folds the Python package's own unit tests (python/tests, run with Debian's
 * python3 -m unittest, with the test Python) into the node:test suite: one test per run,
 * failing with unittest's report when any Python test fails.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { PYTHON } from '../../helpers/python.ts';

/** Debian's python: /usr/local/bin/python3 may be a pyenv python that cannot see apt's numpy and torch. */
const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));

function requireNumpy(): void {
  const r = spawnSync(PYTHON, ['-c', 'import numpy'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    assert.fail(
      `${PYTHON} cannot import numpy (${r.error?.message ?? r.stderr.trim().split('\n').pop()}): install it with apt-get install -y python3-numpy python3-torch`,
    );
  }
}

interface UnittestSummary {
  ran: number;
  ok: boolean;
  /** counts after OK/FAILED, e.g. {failures: 1, errors: 2, skipped: 3} */
  counts: Record<string, number>;
}

/** Parses unittest's closing lines: "Ran 49 tests in 1.2s" and "OK (skipped=2)" or "FAILED (failures=1)". */
function parseSummary(stderr: string): UnittestSummary | undefined {
  const ran = /^Ran (\d+) tests? in [\d.]+s$/m.exec(stderr);
  const verdict = /^(OK|FAILED)(?: \(([^)]*)\))?$/m.exec(stderr);
  if (!ran || !verdict) return undefined;
  const counts: Record<string, number> = {};
  for (const part of (verdict[2] ?? '').split(',')) {
    const m = /^\s*(\w+)=(\d+)\s*$/.exec(part);
    if (m) counts[m[1]!] = Number(m[2]);
  }
  return { ran: Number(ran[1]), ok: verdict[1] === 'OK', counts };
}

describe('python/ unit tests', () => {
  it('pass under python3 -m unittest (the test Python)', () => {
    requireNumpy();
    const r = spawnSync('nice', [PYTHON, '-m', 'unittest', 'discover', '-s', 'python/tests'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 240_000, // ~10 s on a quiet machine; generous for a loaded CI runner
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    });
    assert.equal(r.error, undefined, `could not run ${PYTHON}: ${r.error?.message}`);
    const summary = parseSummary(r.stderr);
    assert.ok(summary, `no unittest summary in the output (exit ${r.status}):\n${r.stderr.slice(-4000)}`);
    assert.ok(summary.ok && r.status === 0, `Python unit tests failed (${JSON.stringify(summary.counts)}):\n${r.stderr.slice(-8000)}`);
    // the suite has ~50 tests: a much smaller count means discovery silently lost a module
    assert.ok(summary.ran >= 45, `only ${summary.ran} Python tests ran`);
    const skipped = summary.counts.skipped ?? 0;
    assert.equal(skipped, 0, `${skipped} Python tests were skipped (is python3-torch installed?):\n${r.stderr.slice(-2000)}`);
  });

  it('parses unittest summaries, including failures', () => {
    assert.deepEqual(parseSummary('...\n----\nRan 12 tests in 0.5s\n\nOK (skipped=2)\n'), { ran: 12, ok: true, counts: { skipped: 2 } });
    assert.deepEqual(parseSummary('F.\nRan 2 tests in 0.001s\n\nFAILED (failures=1, errors=3)\n'), {
      ran: 2,
      ok: false,
      counts: { failures: 1, errors: 3 },
    });
    assert.equal(parseSummary('Traceback (most recent call last):\nImportError: no module named numpy\n'), undefined);
  });
});
