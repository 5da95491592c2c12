/**
 * Job folders import Flotilla by relative path (`../../src/client/api.ts`),
 * which only works where the folder was written. Once shipped into a jobs
 * folder, those imports are redirected to this installation's src/ by a
 * module resolve hook (job-imports-hook.mjs); any other import that leaves the
 * job folder is refused with a message naming the module. The jobs folder
 * gets a package.json marking its code as ES modules.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { register } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const registered = new Set<string>();

export function allowJobImports(jobsDir: string): void {
  const dir = pathToFileURL(jobsDir).href.replace(/\/?$/, '/');
  if (registered.has(dir)) return;
  registered.add(dir);
  // job code is ES modules, as in the repository; without this, a jobs folder outside it would load as CommonJS
  mkdirSync(jobsDir, { recursive: true });
  if (!existsSync(join(jobsDir, 'package.json'))) writeFileSync(join(jobsDir, 'package.json'), '{ "type": "module" }\n');
  register(new URL('./job-imports-hook.mjs', import.meta.url), { data: { jobsDirs: [dir], srcRoot: new URL('../', import.meta.url).href } });
}
