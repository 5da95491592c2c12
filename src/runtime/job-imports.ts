/**
 * How job code finds Flotilla. Jobs import it by name (`import * as flare from
 * 'flotilla/client'`); a resolve hook (job-imports-hook.mjs) sends those imports
 * to the installation running the job, whether the job folder is a checkout's
 * example, a folder written anywhere, or a bundle unpacked into a server's or
 * site's jobs folder. From a source checkout (this file is .ts) the hook picks
 * the `flotilla-source` export condition, so jobs run against src/ without a
 * build; from the package, against dist/.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { register } from 'node:module';
import { join } from 'node:path';
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
  register(hook, { data: { installation, source: FROM_SOURCE, jobsDir: dir } });
}
