/**
 * How job code finds Flotilla. Jobs import it by name (`import * as flare from
 * 'flotilla/client'`); a resolve hook (job-imports-hook.mjs) sends those imports
 * to the installation running the job, whether the job folder is a checkout's
 * example, a folder written anywhere, or a bundle unpacked into a server's or
 * site's jobs folder. From a source checkout (this file is .ts) the hook picks
 * the `flotilla-source` export condition, so jobs run against src/ without a
 * build; from the package, against dist/.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { register } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const hook = new URL('./job-imports-hook.mjs', import.meta.url);
/** the installation's package.json: imports resolved from here see Flotilla's own package scope */
const installation = new URL('../../package.json', import.meta.url).href;
/** running from src/*.ts (a checkout) rather than dist/*.js (the package) */
export const FROM_SOURCE = import.meta.url.endsWith('.ts');

let registered = false;
const jobsDirs = new Set<string>();

/** Makes `flotilla/...` imports of job code resolve to this installation (once per thread; idempotent). */
export function registerJobImports(): void {
  if (registered) return;
  registered = true;
  register(hook, { data: { installation, source: FROM_SOURCE } });
}

/**
 * For a server's or site's jobs folder: job code there may import its own files,
 * `flotilla/...` and packages installed beside Flotilla, nothing else outside its
 * folder. The folder gets a package.json marking its code as ES modules (without
 * it, a jobs folder outside any package would load as CommonJS).
 */
export function allowJobImports(jobsDir: string): void {
  registerJobImports();
  const dir = pathToFileURL(jobsDir).href.replace(/\/?$/, '/');
  if (jobsDirs.has(dir)) return;
  jobsDirs.add(dir);
  mkdirSync(jobsDir, { recursive: true });
  if (!existsSync(join(jobsDir, 'package.json'))) writeFileSync(join(jobsDir, 'package.json'), '{ "type": "module" }\n');
  // one module instance per registration (a query makes the URL distinct): each keeps its own folder
  register(`${hook.href}?jobs=${jobsDirs.size}`, { data: { installation, source: FROM_SOURCE, jobsDir: dir } });
}

/**
 * Job code is ES modules. A .ts or .js file whose nearest package.json does not say
 * `"type": "module"` would load as CommonJS, and `require('flotilla/...')` would not
 * be the installation's ES module graph (a second copy of every class, or nothing at
 * all from dist/). Returns what is wrong and how to fix it, or undefined.
 */
export function commonJsProblem(file: string): string | undefined {
  if (/\.(mts|mjs)$/.test(file)) return undefined;
  if (/\.(cts|cjs)$/.test(file)) return `${file} is CommonJS; job code is ES modules (.ts, .mts, .js, .mjs)`;
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      let type: unknown;
      try {
        type = (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: unknown }).type;
      } catch (e) {
        return `${pkg} is not valid JSON (${(e as Error).message})`;
      }
      return type === 'module'
        ? undefined
        : `${file} would load as CommonJS: ${pkg} does not say "type": "module"; job code is ES modules, so set it there`;
    }
    if (dirname(dir) === dir)
      return `${file} would load as CommonJS: no package.json above it says "type": "module"; job code is ES modules, so add a package.json with {"type": "module"} to the job folder (flotilla new writes one)`;
  }
}
