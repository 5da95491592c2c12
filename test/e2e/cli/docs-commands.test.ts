/**
 * Every command the README and the docs show a user is checked here, so a documented command
 * that stops working fails the suite:
 * - quick ones run as written: the quick start's job, `flotilla new`, and the README's POC
 *   walk-through line by line (its workspace in a temporary folder, `<job>` the id `submit` printed);
 * - a command identical to one that ran is covered by that run;
 * - `simulate <job folder>` of another example is covered by a test that runs that folder;
 * - usage lines (`<arg>`, `[--flag]`) and CLI commands not run here: `flotilla <command> --help`
 *   lists every flag they use;
 * - benchmarks and experiment scripts (minutes to hours): the script exists and parses every
 *   flag the docs give it (its --help for bench/, its source otherwise);
 * - `--test` lines name test files that exist; pip and unittest lines are what .ci/run and a
 *   named test run.
 * A command no rule covers fails the test: add a rule, or fix the docs.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { freePortPair, repo } from '../../helpers/federation.ts';

const exec = promisify(execFile);
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-docs-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Documented {
  file: string;
  line: number;
  command: string;
}

/** The command lines of a Markdown file's shell blocks (```sh, ```bash, ```console, ``` or ```text). */
function commandsIn(file: string): Documented[] {
  const out: Documented[] = [];
  const lines = readFileSync(join(repo, file), 'utf8').split('\n');
  let inShell = false;
  let inBlock = false;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    const fence = /^\s*```(\w*)/.exec(l);
    if (fence) {
      if (inBlock) inBlock = inShell = false;
      else {
        inBlock = true;
        inShell = ['', 'sh', 'bash', 'console', 'text', 'shell'].includes(fence[1]!);
      }
      continue;
    }
    if (!inShell) continue;
    const cmd = l
      .trim()
      .replace(/^\$ /, '')
      .replace(/\s+#\s.*$/, '')
      .trim();
    if (/^(npx|npm|node|pip|\.venv\/bin\/pip|python3|\$FLOTILLA_PYTHON) /.test(cmd)) out.push({ file, line: i + 1, command: cmd });
  }
  return out;
}

function markdownFiles(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(join(repo, dir), { withFileTypes: true }).flatMap((e) => {
      const p = join(dir, e.name);
      if (e.isDirectory()) return e.name === 'node_modules' ? [] : walk(p);
      return e.name.endsWith('.md') ? [p] : [];
    });
  const examples = readdirSync(join(repo, 'examples'))
    .map((d) => join('examples', d, 'README.md'))
    .filter((p) => existsSync(join(repo, p)));
  return ['README.md', 'python/README.md', ...walk('docs'), ...examples];
}

const documented = markdownFiles().flatMap(commandsIn);
const where = (d: Documented): string => `${d.file}:${d.line}: ${d.command}`;

/** Runs `npx flotilla ...` (or any command line) in the repository, through a shell as a user would. */
async function sh(command: string, env: Record<string, string> = {}, timeoutMs = 120_000): Promise<string> {
  try {
    const r = await exec('bash', ['-c', command], { cwd: repo, env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 64 << 20 });
    return `${r.stdout}${r.stderr}`;
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`documented command failed: ${command}\n${x.message}\n${x.stdout ?? ''}${x.stderr ?? ''}`);
  }
}

/** Commands that ran in this file's tests, normalized; a documented command equal to one of them is covered. */
const ran = new Set<string>();
const norm = (c: string): string => c.replace(/\s+/g, ' ').replace(/ -n (\d+)/, ' --clients $1');

test('the quick start job, `flotilla new --list` and a new job from a template run as documented', async () => {
  const quick = documented.find((d) => d.file === 'README.md' && d.command.includes('simulate examples/hello-fedavg'));
  assert.ok(quick, 'the README quick start simulates examples/hello-fedavg');
  const job = quick.command.replace(/^npm ci && /, '');
  const out = await sh(`${job} --workspace ${tmp}/quick`);
  assert.match(out, /^\s+5\/5\s+3\s/m, 'the quick start prints its 5 rounds of 3 sites');
  assert.ok(existsSync(join(tmp, 'quick', 'server', 'global_model.safetensors')), 'the quick start writes its global model');
  ran.add(norm(job));
  ran.add(norm(quick.command));

  const list = await sh('npx flotilla new --list');
  assert.match(list, /tfjs/);
  ran.add('npx flotilla new --list');

  const create = documented.find((d) => /^npx flotilla new workspace\/my-job --template tfjs$/.test(d.command));
  assert.ok(create, 'the README shows `flotilla new`');
  await sh(`npx flotilla new ${tmp}/my-job --template tfjs`);
  const sim = await sh(`npx flotilla simulate ${tmp}/my-job --clients 3 --workspace ${tmp}/ws-new`);
  assert.match(sim, /round/i);
  ran.add(create.command);
  ran.add('npx flotilla simulate workspace/my-job --clients 3');
});

test("the README's POC walk-through runs line by line: sites listed, the job finishes, its results download", async () => {
  const block = documented.filter((d) => d.file === 'README.md' && /^npx flotilla (poc|admin) /.test(d.command));
  assert.ok(block.length >= 6, `the README shows the POC walk-through (${block.length} lines)`);
  const ws = join(tmp, 'poc');
  const port = await freePortPair();
  const local = (c: string): string => c.replaceAll('workspace/poc', ws).replace(/ -o downloads$/, ` -o ${tmp}/downloads`);
  const A = join(ws, 'poc', 'prod_01', 'admin@poc.example');
  assert.ok(readFileSync(join(repo, 'README.md'), 'utf8').includes('A=workspace/poc/poc/prod_01/admin@poc.example'));
  let jobId = '';
  try {
    for (const d of block) {
      let c = local(d.command).replace('<job>', jobId);
      if (/ poc prepare /.test(c)) c += ` -p ${port}`;
      const env = { A };
      if (/ admin \$A sites$/.test(c)) {
        // "until site-1 and site-2 are listed"
        const deadline = Date.now() + 60_000;
        let out = '';
        while (!(/site-1/.test(out) && /site-2/.test(out) && /site-3/.test(out)) && Date.now() < deadline) out = await sh(c, env);
        assert.match(out, /site-1[\s\S]*site-2[\s\S]*site-3/, `${where(d)}: the three sites listed`);
      } else if (/ admin \$A status /.test(c)) {
        const deadline = Date.now() + 120_000;
        let out = '';
        while (!/FINISHED|FAILED|ABORTED/.test(out) && Date.now() < deadline) {
          out = await sh(c, env);
          await new Promise((r) => setTimeout(r, 500));
        }
        assert.match(out, /FINISHED/, `${where(d)}: the job finishes`);
      } else {
        const out = await sh(c, env);
        if (/ submit /.test(c)) {
          jobId = /hello-fedavg-[0-9a-f]+/.exec(out)?.[0] ?? '';
          assert.ok(jobId, `${where(d)} prints the job id: ${out}`);
        }
      }
      ran.add(norm(d.command));
    }
    const downloaded = join(tmp, 'downloads', jobId);
    assert.ok(existsSync(join(downloaded, 'summary.json')), `the download holds summary.json (${downloaded})`);
  } finally {
    await sh(`npx flotilla poc stop -w ${ws}`).catch(() => undefined);
  }
});

// ---- the rules for every other documented command -------------------------------------------

const helpCache = new Map<string, Promise<string>>();
function helpOf(command: string): Promise<string> {
  let h = helpCache.get(command);
  if (!h) {
    h = sh(`${command} --help`, {}, 180_000);
    helpCache.set(command, h);
  }
  return h;
}

/** The flags a command line uses (`--clients`, `-n`), placeholders and `[...]` included. */
const flagsOf = (c: string): string[] => [...new Set([...c.matchAll(/(?:^|[\s[|])(--?[a-zA-Z][\w-]*)/g)].map((m) => m[1]!))];

/** Every test file, as a path from the repository root. */
const testFiles = readdirSync(join(repo, 'test'), { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.test.ts') && !f.endsWith('docs-commands.test.ts'))
  .map((f) => join('test', f));

/** The test files that mention `text`. */
function testsMentioning(text: string): string[] {
  return testFiles.filter((f) => readFileSync(join(repo, f), 'utf8').includes(text));
}

async function checkFlotilla(d: Documented): Promise<void> {
  const words = d.command.split(/\s+/).slice(2);
  // the command path: `simulate`, `poc prepare`, `server start`, `admin`
  const path: string[] = [];
  for (const w of words) {
    if (!/^[a-z][a-z-]*$/.test(w)) break;
    path.push(w);
    if (path.length === 2 || ['simulate', 'admin', 'new', 'provision', 'validate'].includes(w)) break;
  }
  assert.ok(path.length > 0, `${where(d)}: no flotilla command`);
  const help = await helpOf(`npx flotilla ${path.join(' ')}`);
  assert.match(help, /^Usage: flotilla/m, `${where(d)}: \`flotilla ${path.join(' ')} --help\` prints its usage`);
  for (const f of flagsOf(
    d.command
      .split(/\s+/)
      .slice(2 + path.length)
      .join(' '),
  ))
    assert.ok(new RegExp(`(^|[\\s,])${f}([\\s,]|$)`, 'm').test(help), `${where(d)}: \`flotilla ${path.join(' ')}\` has no ${f}`);
  if (path[0] === 'admin') {
    const sub = words.slice(2).find((w) => /^[a-z][a-z-]+$/.test(w));
    if (sub) assert.match(help, new RegExp(`\\b${sub}\\b`), `${where(d)}: admin has no command ${sub}`);
  }
  const sim = /^npx flotilla simulate (examples\/([\w-]+)\/?([\w/-]*?))\/?(\s|$)/.exec(d.command);
  if (sim) {
    // a test names the folder in full, or (within its example) by its path under the example
    const [, full, example, inner] = sim as unknown as [string, string, string, string];
    const covered =
      testsMentioning(full).length > 0 ||
      (inner.includes('/') && testsMentioning(inner).some((f) => readFileSync(join(repo, f), 'utf8').includes(example)));
    assert.ok(covered, `${where(d)}: no test runs the job folder ${full}`);
  }
}

/** Whether a script's source handles a flag: `'--from <x>'` (commander), `'--quick'`, `flag('max-residues')`, `"-n"`. */
const parses = (src: string, f: string): boolean =>
  (f.startsWith('--') && (src.includes(`'${f}`) || src.includes(`"${f}`) || src.includes(`'${f.slice(2)}'`))) ||
  src.includes(`'${f}'`) ||
  src.includes(`"${f}"`) ||
  src.includes(`'${f},`);

async function checkNodeScript(d: Documented): Promise<void> {
  const testFiles = /--test (.+)$/.exec(d.command);
  if (testFiles) {
    for (const pattern of testFiles[1]!.split(/\s+/)) {
      const re = new RegExp(`^${pattern.replaceAll('.', '\\.').replaceAll('*', '[^/]*')}$`);
      assert.ok(
        testFiles.some((f) => re.test(f)) || pattern.endsWith('docs-commands.test.ts'),
        `${where(d)}: no test file matches ${pattern}`,
      );
    }
    return;
  }
  const script = /\s((?:bench|examples|scripts|src)\/[\w./-]+\.ts)/.exec(d.command)?.[1];
  assert.ok(script, `${where(d)}: which script?`);
  assert.ok(existsSync(join(repo, script)), `${where(d)}: ${script} does not exist`);
  const flags = flagsOf(d.command.slice(d.command.indexOf(script)));
  if (script.startsWith('bench/')) {
    const help = await helpOf(`node --conditions=flotilla-source --import tsx ${script}`);
    for (const f of flags) assert.ok(help.includes(f), `${where(d)}: ${script} --help does not list ${f}`);
  } else {
    const src = readFileSync(join(repo, script), 'utf8');
    for (const f of flags) assert.ok(parses(src, f), `${where(d)}: ${script} does not parse ${f}`);
  }
}

test('every other documented command is covered: its --help lists its flags, its script exists, a test runs it', async () => {
  assert.ok(documented.length > 50, `found ${documented.length} documented commands`);
  const ci = readFileSync(join(repo, '.ci/run'), 'utf8');
  const failures: string[] = [];
  await Promise.all(
    documented.map(async (d) => {
      const c = d.command;
      try {
        if (ran.has(norm(c))) return;
        if (c === 'npm ci && npm test')
          assert.ok(/npm ci/.test(ci) && /npm test/.test(ci), '.ci/run runs npm ci and npm test on a fresh clone');
        else if (/^npm install \S+\.tgz$/.test(c)) assert.ok(testsMentioning('npm pack').length > 0, 'a test installs the packed tarball');
        else if (c === 'npx flotilla simulate my-job --clients 2')
          assert.ok(testsMentioning("npx('simulate'").length > 0 || testsMentioning('simulate').length > 0);
        else if (/^npx flotilla /.test(c)) await checkFlotilla(d);
        else if (/^node /.test(c)) await checkNodeScript(d);
        else if (/^(\.venv\/bin\/)?pip install/.test(c))
          assert.ok(/pip install/.test(ci) || testsMentioning('pip').length > 0, 'pip install is run by .ci/run or a test');
        else if (/^python3 -m unittest discover -s python\/tests$/.test(c))
          assert.ok(testsMentioning("'discover', '-s', 'python/tests'").length > 0);
        else if (/^\$FLOTILLA_PYTHON (\S+\.py)/.test(c)) {
          const py = /^\$FLOTILLA_PYTHON (\S+\.py)/.exec(c)![1]!;
          const src = readFileSync(join(repo, py), 'utf8');
          for (const f of flagsOf(c.slice(c.indexOf(py)))) assert.ok(parses(src, f), `${py} does not parse ${f}`);
        } else assert.fail('no rule covers this command: run it in docs-commands.test.ts, or name the test that does');
      } catch (e) {
        failures.push(`${where(d)}\n    ${(e as Error).message.split('\n')[0]}`);
      }
    }),
  );
  assert.deepEqual(failures, [], `documented commands that fail their check (test/e2e/cli/docs-commands.test.ts):\n${failures.join('\n')}`);
});
