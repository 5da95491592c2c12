/**
 * Every shell command in README.md and docs/**.md runs here, or is checked the way its entry in
 * PLAN says (and why). A documented command that fails, or a new one PLAN does not cover,
 * fails the test: the docs cannot drift from the CLI and scripts.
 *
 * A command is a line of a fenced block (sh, bash, shell, console or no language) whose first
 * word is one of COMMAND_WORDS; a line ending in `|` or `\` continues on the next.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePortPair } from './helpers/federation.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-docs-'));
after(() => {
  const pids = join(tmp, 'poc', 'pids.json');
  if (existsSync(pids)) for (const pid of Object.values(JSON.parse(readFileSync(pids, 'utf8')) as Record<string, number>)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  rmSync(tmp, { recursive: true, force: true });
});

interface Command {
  file: string;
  line: number;
  text: string;
}

const COMMAND_WORDS = /^(npx|npm|node|nice|nohup|python3|\/usr\/bin\/python3|pip|apt-get|A=)/;
const SHELL_LANGS = new Set(['', 'sh', 'bash', 'shell', 'console']);

function docFiles(): string[] {
  const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : e.name.endsWith('.md') ? [join(d, e.name)] : []));
  return [join(repo, 'README.md'), ...walk(join(repo, 'docs'))];
}

function commandsOf(file: string): Command[] {
  const out: Command[] = [];
  let fence: string | null = null;
  let lang = '';
  const lines = readFileSync(file, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^\s*(`{3,}|~{3,})\s*([\w-]*)/.exec(lines[i]!);
    if (m) {
      if (fence === null) [fence, lang] = [m[1]!, m[2]!];
      else if (m[1]![0] === fence[0] && m[1]!.length >= fence.length) fence = null;
      continue;
    }
    if (fence === null || !SHELL_LANGS.has(lang)) continue;
    let text = lines[i]!.trim();
    if (!COMMAND_WORDS.test(text)) continue;
    const line = i + 1;
    while (/[|\\]\s*(#.*)?$/.test(text.replace(/\s+#.*$/, '')) && i + 1 < lines.length) text = `${text.replace(/\\\s*$/, '')} ${lines[++i]!.trim()}`;
    out.push({ file: relative(repo, file), line, text: text.replace(/\s+#\s.*$/, '').trim() });
  }
  return out;
}

const all = docFiles().flatMap(commandsOf);

/** How each documented command is checked, first match wins. */
type Check = 'quickstart' | 'run' | 'poc' | 'help' | 'suite' | 'validate' | 'system';
const PLAN: { match: RegExp; check: Check; why: string }[] = [
  { match: /^npm ci && /, check: 'quickstart', why: 'the quick start: test/quickstart.test.ts runs these lines on a fresh clone' },
  { match: /^A=/, check: 'poc', why: 'the admin kit of the POC session below' },
  { match: /^npx flotilla (poc|admin \$A)/, check: 'poc', why: 'a POC session: run in order here (workspace in a temp folder, a free port, <job> = the submitted job)' },
  { match: /^npx flotilla [\w -]*[<[]/, check: 'help', why: 'a synopsis with placeholders: its subcommand\'s --help must name every flag it shows' },
  { match: /^npx flotilla simulate examples\/llm\//, check: 'validate', why: 'the full LLM job takes minutes: validated here; test/llm-jobs.test.ts simulates it shortened' },
  { match: /^npx flotilla (simulate|new) /, check: 'run', why: 'runs as written, in document order (workspace/ and simulate\'s --workspace in a temp folder)' },
  { match: /^(nohup )?(nice (-n \d+ )?)?node --conditions=flotilla-source --import tsx --test /, check: 'suite', why: 'test files of this suite: npm test runs them' },
  { match: /^(nohup )?(nice (-n \d+ )?)?node --conditions=flotilla-source --import tsx (bench|examples)\//, check: 'help', why: 'benchmarks and experiments take minutes to hours: --help must run and name every flag the docs use' },
  { match: /^(apt-get|pip) /, check: 'system', why: 'installs system packages: .ci/run does it' },
];

const planOf = (c: Command) => PLAN.find((p) => p.match.test(c.text));

const cli = (args: string[], env: NodeJS.ProcessEnv = {}): string => execFileSync('npx', ['flotilla', ...args], { cwd: repo, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
const flagsIn = (text: string): string[] => [...new Set([...text.matchAll(/(?:^|[\s[])(--?[a-z][\w-]*)/g)].map((m) => m[1]!))];
const words = (s: string): string[] => s.match(/"[^"]*"|'[^']*'|\S+/g)!.map((w) => w.replace(/^["']|["']$/g, ''));

test('the docs have commands, and every one is covered by PLAN', () => {
  assert.ok(all.length > 20, `only ${all.length} commands found: is the extraction still right?`);
  const uncovered = all.filter((c) => !planOf(c)).map((c) => `${c.file}:${c.line}: ${c.text}`);
  assert.deepEqual(uncovered, [], 'add these documented commands to PLAN in test/docs-commands.test.ts');
  const counts: Record<string, number> = {};
  for (const c of all) counts[planOf(c)!.check] = (counts[planOf(c)!.check] ?? 0) + 1;
  console.log(`${all.length} documented commands: ${JSON.stringify(counts)}`);
});

test('documented synopses and long-running scripts: --help runs and names every flag the docs use', () => {
  const helps = new Map<string, string>(); // one --help per command: many doc lines run the same script
  const once = (key: string[], run: () => string): string => {
    const k = key.join(' ');
    if (!helps.has(k)) helps.set(k, run());
    return helps.get(k)!;
  };
  for (const c of all.filter((x) => planOf(x)!.check === 'help')) {
    const w = words(c.text.replace(/^(nohup )?(nice (-n \d+ )?)?/, ''));
    let help: string;
    if (w[0] === 'npx') {
      const sub = w.slice(2, w.findIndex((x, i) => i >= 2 && /^[<[-]/.test(x)));
      help = once(sub, () => cli([...sub, '--help']));
      assert.match(help, /^Usage: flotilla/m, `${c.file}:${c.line}`);
    } else {
      const script = w.findIndex((x) => x.endsWith('.ts'));
      const argv = [...w.slice(1, script + 1), '--help'];
      help = once(argv, () => execFileSync(process.execPath, argv, { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    }
    const missing = flagsIn(c.text.replace(/^.*?\.ts\s/, ' ').replace(/^npx flotilla/, '')).filter((f) => !help.includes(f) && !['--import', '--conditions'].includes(f));
    assert.deepEqual(missing, [], `${c.file}:${c.line}: ${c.text}\nflags the docs use that --help does not name`);
  }
});

test('documented simulations run as written', { timeout: 600_000 }, () => {
  for (const c of all.filter((x) => planOf(x)!.check === 'run')) {
    const args = words(c.text.replaceAll('workspace/', `${tmp}/`)).slice(2);
    const simulate = args[0] === 'simulate';
    const out = cli(simulate ? [...args, '--workspace', join(tmp, `sim-${c.line}`)] : args);
    assert.match(out, simulate ? /Done in/ : /Templates|Created job/, `${c.file}:${c.line}: ${c.text}`);
  }
  for (const c of all.filter((x) => planOf(x)!.check === 'validate')) {
    assert.match(cli(['validate', words(c.text)[3]!]), /: ok \(job/, `${c.file}:${c.line}: ${c.text}`);
  }
});

test('documented test files exist (npm test runs them)', () => {
  for (const c of all.filter((x) => planOf(x)!.check === 'suite')) {
    const globs = words(c.text).filter((x) => x.startsWith('test/'));
    assert.ok(globs.length > 0, `${c.file}:${c.line}`);
    for (const g of globs) {
      const re = new RegExp(`^${g.slice('test/'.length).replace(/\./g, '\\.').replace(/\*/g, '.*')}$`);
      assert.ok(readdirSync(join(repo, 'test')).some((f) => re.test(f)), `${c.file}:${c.line}: no test file matches ${g}`);
    }
  }
});

test('the documented POC sessions run in order: prepare, start, sites, submit, list, status, download, stop', { timeout: 600_000 }, async () => {
  const poc = all.filter((x) => planOf(x)!.check === 'poc' || x.text.startsWith('A='));
  // README's session is a subset of docs/deployment.md's: run the longest, check the others are in it
  const byFile = new Map<string, string[]>();
  for (const c of poc) byFile.set(c.file, [...(byFile.get(c.file) ?? []), c.text]);
  const sessions = [...byFile.values()].sort((a, b) => b.length - a.length);
  const longest = sessions[0]!;
  for (const s of sessions.slice(1)) assert.deepEqual(s.filter((l) => !longest.includes(l)), [], 'every documented POC command is in the session run here');

  const port = await freePortPair();
  const ws = join(tmp, 'poc');
  let jobId = '';
  let kit = '';
  for (const line of longest) {
    const text = line.replaceAll('workspace/poc', ws).replace('-o downloads', `-o ${join(tmp, 'downloads')}`);
    if (text.startsWith('A=')) {
      kit = text.slice(2);
      continue;
    }
    let args = words(text).slice(2).map((w) => (w === '$A' ? kit : w === '<job>' ? jobId : w));
    if (args[0] === 'poc' && args[1] === 'prepare') args = [...args, '-p', String(port)];
    if (args[0] === 'admin' && args[2] === 'download') {
      // the docs' reader runs status until the job is FINISHED; so does this test
      const deadline = Date.now() + 400_000;
      let state = '';
      while (Date.now() < deadline && !['FINISHED', 'FAILED', 'ABORTED'].includes(state)) {
        state = (JSON.parse(cli(['admin', kit, 'status', jobId, '--json'])) as { state: string }).state;
        if (state !== 'FINISHED') await new Promise((r) => setTimeout(r, 1000));
      }
      assert.equal(state, 'FINISHED');
    }
    if (args[0] === 'admin' && args[2] === 'sites') {
      // poc start returns once the processes are spawned; the reader runs `sites` until both are there
      const up = Date.now() + 90_000;
      while (!/site-1[\s\S]*site-2/.test(spawnSync('npx', ['flotilla', ...args], { cwd: repo, encoding: 'utf8' }).stdout ?? '')) {
        assert.ok(Date.now() < up, 'the POC sites connected within 90 s');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    const out = cli(args);
    if (args[0] === 'admin' && args[2] === 'submit') jobId = /Submitted job (\S+)/.exec(out)![1]!;
    if (args[0] === 'admin' && args[2] === 'download') assert.ok(existsSync(join(tmp, 'downloads', jobId, 'global_model.safetensors')), out);
  }
  assert.ok(jobId, 'the session submitted a job');
  assert.ok(!existsSync(join(ws, 'pids.json')), 'poc stop ran');
});
