/**
 * Job folders import Flotilla by relative path (`../../src/client/api.ts`),
 * which only works where the folder was written. Once shipped into a jobs
 * folder, those imports are redirected to this installation's src/ by a
 * module resolve hook (job-imports-hook.mjs); any other import that leaves the
 * job folder is refused with a message naming the module.
 */
import { register } from 'node:module';
import { pathToFileURL } from 'node:url';

const registered = new Set<string>();

export function allowJobImports(jobsDir: string): void {
  const dir = pathToFileURL(jobsDir).href.replace(/\/?$/, '/');
  if (registered.has(dir)) return;
  registered.add(dir);
  register(new URL('./job-imports-hook.mjs', import.meta.url), { data: { jobsDirs: [dir], srcRoot: new URL('../', import.meta.url).href } });
}
