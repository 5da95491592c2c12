// "Long admin waits show progress too": withWaitLine (what `admin submit`, every admin command and
// `poc start` wait inside) draws a redrawn line on a terminal's stderr once a wait passes a second,
// counting the seconds, and clears it when the reply comes; a wait under a second, a stderr that is
// no terminal, or CI draws nothing. Run in a child process whose stderr claims to be a terminal.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { repo } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-wait-line-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** stderr of a child that waits `ms` inside withWaitLine (its stderr a "terminal" unless `tty` is false). */
function waitFor(ms: number, o: { tty?: boolean; ci?: boolean } = {}): { stdout: string; stderr: string } {
  const script = join(tmp, `wait-${ms}-${o.tty ?? true}-${o.ci ?? false}.mts`);
  writeFileSync(
    script,
    `${o.tty === false ? '' : "Object.defineProperty(process.stderr, 'isTTY', { value: true });"}
const { withWaitLine } = await import(${JSON.stringify(join(repo, 'src/cli/wait-line.ts'))});
const v = await withWaitLine('status: waiting for the server', () => new Promise((r) => setTimeout(() => r(42), ${ms})));
process.stdout.write('reply ' + v);
`,
  );
  const env = { ...process.env };
  delete env.CI;
  if (o.ci) env.CI = 'true';
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: repo, env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return { stdout: r.stdout, stderr: r.stderr };
}

test('a wait over a second: a line on stderr counting the seconds, cleared at the reply', () => {
  const { stdout, stderr } = waitFor(2200);
  assert.equal(stdout, 'reply 42');
  const seconds = [...stderr.matchAll(/status: waiting for the server … (\d+\.\d) s/g)].map((m) => Number(m[1]));
  assert.ok(seconds.length >= 3, stderr);
  assert.ok(seconds[0]! >= 1 && seconds.at(-1)! >= 1.8, `counted ${seconds.join(', ')}`);
  assert.deepEqual(
    [...seconds].sort((a, b) => a - b),
    seconds,
    'the count only grows',
  );
  // the line is cleared at the end (erase line), the cursor shown again
  assert.ok(stderr.endsWith('\u001b[2K'), JSON.stringify(stderr.slice(-40)));
});

test('a wait under a second, a stderr that is no terminal, or CI: nothing drawn', () => {
  assert.equal(waitFor(300).stderr, '');
  assert.equal(waitFor(1500, { tty: false }).stderr, '');
  assert.equal(waitFor(1500, { ci: true }).stderr, '');
});
