/**
 * `flotilla validate`: everything a job names is resolved before anything runs, so a typo is a
 * message naming the file and the field, in about a second, not a failed round minutes later.
 * Checks, first problem wins: the config (job-config.ts); the model (`path`: a readable
 * safetensors file; `module`: imports, exports a function); every executor (top level and per
 * site): a trainer module imports and exports the function it names; a script's command
 * resolves (`{python}` as a site would resolve it) to an executable, its script file exists, and
 * a Python interpreter can import `flotilla` (with the job's env), compiles the script and, for
 * `params: file`, has a flotilla that supports it; every filter module of the job loads and its
 * args pass its schema.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SafetensorsFile } from '../core/safetensors.ts';
import { type ExecutorSpec, JobConfigError } from './job-config.ts';
import { registerJobImports } from './job-imports.ts';
import { isDefinition, parseDeclaredArgs } from '../util/declared-args.ts';
import { FLOTILLA_ROOT, type Job, type SiteSettings, loadJob, resolvePython } from './job.ts';

/** Loads the job and checks everything it names; throws a JobConfigError naming the file and field. */
export async function checkJob(jobDir: string, settings: SiteSettings = {}): Promise<Job> {
  const job = loadJob(jobDir);
  const fail = (field: string, msg: string): never => {
    throw new JobConfigError(`${job.file}: ${field}: ${msg}`);
  };
  const spec = job.config.model;
  if ('path' in spec) {
    const path = join(job.dir, spec.path);
    if (!existsSync(path)) fail('model.path', `${path} does not exist`);
    try {
      await (await SafetensorsFile.open(path)).close();
    } catch (e) {
      fail('model.path', `${path} is not a readable safetensors file: ${(e as Error).message}`);
    }
  } else {
    const hook = await checkExport(job, spec.module, spec.export, 'model', fail);
    checkDeclaredArgs(job, hook, spec.args, 'model.args', spec.module);
  }
  await checkExecutor(job, job.config.executor, 'executor', settings, fail);
  for (const [site, s] of Object.entries(job.config.sites)) await checkExecutor(job, s.executor, `sites.${site}.executor`, settings, fail);
  // each filter module (type: custom) loads and exports a definition whose schema passes its args
  // (imported only then: the filters pull in node-seal, a cost `validate` of other jobs need not pay)
  if (job.config.filters.some((f) => f.type === 'custom')) await (await import('./filters.ts')).loadJobFilters(job);
  return job;
}

type Fail = (field: string, msg: string) => never;

/** Imports a job module's export and checks it is a function or a `{ schema, create }` definition; returns it. */
async function checkExport(job: Job, module: string, name: string, field: string, fail: Fail): Promise<unknown> {
  const path = join(job.dir, module);
  if (!existsSync(path)) fail(`${field}.module`, `${path} does not exist`);
  let mod: Record<string, unknown>;
  registerJobImports(); // the module's `flotilla/...` imports resolve to this installation, not to a dist/ that may not exist
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (e) {
    return fail(`${field}.module`, `cannot load ${path}: ${(e as Error).message}`);
  }
  if (!(name in mod)) fail(`${field}`, `${module} has no export "${name}" (it exports ${Object.keys(mod).join(', ') || 'nothing'})`);
  const value = mod[name];
  if (typeof value !== 'function' && !isDefinition(value))
    fail(`${field}`, `export "${name}" of ${module} must be a function or a { schema, create } definition, it is ${typeof value}`);
  return value;
}

/** A definition's args, parsed by the schema it declares (a plain function takes them as written). */
function checkDeclaredArgs(job: Job, value: unknown, args: unknown, field: string, module: string): void {
  if (!isDefinition(value)) return;
  const parsed = parseDeclaredArgs(value.schema, args, field);
  if (!parsed.ok) throw new JobConfigError(`${job.file}: ${parsed.reason} (the schema ${module} declares)`);
}

async function checkExecutor(job: Job, spec: ExecutorSpec, field: string, settings: SiteSettings, fail: Fail): Promise<void> {
  if ('trainer' in spec) {
    const t = spec.trainer;
    const value = await checkExport(job, t.module, 'factory' in t ? t.factory : t.export, `${field}.trainer`, fail);
    if ('factory' in t) checkDeclaredArgs(job, value, t.args, `${field}.trainer.args`, t.module);
    else if (isDefinition(value))
      fail(`${field}.trainer`, `export "${t.export}" of ${t.module} is a trainer definition: name it with factory: ${t.export}`);
    return;
  }
  const s = spec.script;
  const python = resolvePython(settings.python);
  // what can be known before a site runs it; per-site placeholders stay as they are
  const fill = (v: string): string =>
    v.replaceAll('{python}', python).replaceAll('{flotillaRoot}', FLOTILLA_ROOT).replaceAll('{jobDir}', job.dir);
  const command = fill(s.command);
  const exe = findExecutable(command, job.dir);
  if (!exe) {
    const how = s.command.includes('{python}')
      ? ` ({python} resolved to "${python}": set FLOTILLA_PYTHON or the site's python setting)`
      : '';
    fail(`${field}.script.command`, `"${command}" is not an executable file nor on PATH${how}`);
  }
  const args = s.args.map(fill);
  // the script: the first argument that names a file by its extension
  const scriptIndex = args.findIndex((a) => /\.(py|ts|mjs|js)$/.test(a) && !a.includes('{'));
  const script = scriptIndex >= 0 ? resolve(job.dir, args[scriptIndex]!) : null;
  if (script && !existsSync(script)) fail(`${field}.script.args.${scriptIndex}`, `${script} does not exist`);
  if (!s.command.includes('{python}') && !isPython(exe)) return;
  const env = { ...process.env, ...Object.fromEntries(Object.entries(s.env).map(([k, v]) => [k, fill(v)])) };
  // one interpreter start: flotilla importable, the script compiles, file mode supported
  const probe = [
    'import sys',
    'try:\n    import flotilla\nexcept Exception as e:\n    print("IMPORT", type(e).__name__, e); sys.exit(3)',
    'if sys.argv[1] == "file" and "params_file" not in getattr(flotilla, "CAPABILITIES", ()):\n    print("FILE", getattr(flotilla, "__file__", "?")); sys.exit(4)',
    'if sys.argv[2]:\n    try:\n        compile(open(sys.argv[2], encoding="utf-8").read(), sys.argv[2], "exec")\n    except SyntaxError as e:\n        print("SYNTAX", e); sys.exit(5)',
  ].join('\n');
  const r = spawnSync(exe, ['-c', probe, spec.params, script && script.endsWith('.py') ? script : ''], {
    cwd: job.dir,
    env,
    encoding: 'utf8',
    timeout: 30_000,
  });
  const out = `${r.stdout ?? ''}`.trim();
  if (r.error) fail(`${field}.script.command`, `could not run ${exe}: ${r.error.message}`);
  if (r.status === 3)
    fail(
      `${field}.script.command`,
      `${exe} cannot import flotilla (${out.replace(/^IMPORT /, '')}): pip install ./python into it, or set PYTHONPATH to Flotilla's python/ folder in ${field}.script.env`,
    );
  if (r.status === 4)
    fail(
      `${field}.params`,
      `"file" needs a flotilla Python package that supports it; ${exe} imports an older one (${out.replace(/^FILE /, '')}): reinstall it (pip install ./python)`,
    );
  if (r.status === 5) fail(`${field}.script.args.${scriptIndex}`, `${out.replace(/^SYNTAX /, '')}`);
  if (r.status !== 0)
    fail(`${field}.script.command`, `${exe} failed (exit ${r.status}): ${`${r.stderr ?? ''}`.trim().split('\n').slice(-3).join(' | ')}`);
}

function isPython(exe: string): boolean {
  return /(^|\/)python[0-9.]*$/.test(exe) || /(^|\/)pypy[0-9.]*$/.test(exe);
}

/** The executable `command` names: a path (relative to the job folder) or a name on PATH. */
function findExecutable(command: string, cwd: string): string | null {
  const ok = (p: string): boolean => {
    try {
      accessSync(p, constants.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (command.includes('/')) {
    const p = isAbsolute(command) ? command : resolve(cwd, command);
    return ok(p) ? p : null;
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && ok(join(dir, command))) return join(dir, command);
  }
  return null;
}
