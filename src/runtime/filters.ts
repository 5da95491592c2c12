/**
 * A job's filters at one side: the built-ins of its `filters:` list, its own filter modules
 * (`type: custom`, loaded and their args checked like custom workflows), and at a site that site's
 * privacy policy after them (src/filters/policy.ts).
 */
import { join } from 'node:path';
import { FilterChain, type ChainEntry, builtinFilter, entryFor } from '../filters/chain.ts';
import type { HeContext } from '../filters/he-context.ts';
import { type PrivacyPolicy, policyFilters } from '../filters/policy.ts';
import type { FilterDefinition } from '../filters/types.ts';
import { zodIssues } from '../util/zod-error.ts';
import { JobConfigError } from './job-config.ts';
import { type Job, importFrom } from './job.ts';

function definitionProblem(value: unknown): string | null {
  if (typeof value !== 'object' || value === null) return `it is ${value === null ? 'null' : typeof value}, not { name, schema, create }`;
  const d = value as Partial<Record<'name' | 'schema' | 'create', unknown>>;
  if (typeof d.name !== 'string' || !d.name) return 'its "name" must be a non-empty string';
  if (typeof (d.schema as { safeParse?: unknown } | undefined)?.safeParse !== 'function') return 'its "schema" must be a zod schema';
  if (typeof d.create !== 'function') return 'its "create" must be a function';
  return null;
}

/**
 * The job's filter chain (and, at a site, its policy's); custom modules are imported and their args
 * validated. `he`: a site's HE context, for a job with the he filter. `stateDir`: a site's folder
 * of the job, which outlives a restart of the site: dp_gaussian keeps its count of releases there.
 */
export async function loadJobFilters(job: Job, policy?: PrivacyPolicy, he?: HeContext, stateDir?: string): Promise<FilterChain> {
  const entries: ChainEntry[] = [];
  const releases = (field: string): string | undefined => stateDir && join(stateDir, `dp-releases.${field}.json`);
  for (const [i, spec] of job.config.filters.entries()) {
    const field = `filters.${i}`;
    if (spec.type !== 'custom') {
      entries.push(entryFor(spec, `${field} (${spec.type})`, builtinFilter(spec, he, releases(field))));
      continue;
    }
    const value = await importFrom(job, spec.module, spec.export, `${field}.module`);
    const problem = definitionProblem(value);
    if (problem)
      throw new JobConfigError(
        `${job.file}: ${field}: export "${spec.export}" of ${spec.module} is not a filter definition: ${problem} (see defineFilter in flotilla/filters)`,
      );
    const def = value as FilterDefinition;
    const parsed = def.schema.safeParse(spec.args);
    if (!parsed.success) {
      const issues = zodIssues(parsed.error).map(
        (l) => `${field}.args${l.startsWith('(top level)') ? l.slice('(top level)'.length) : `.${l}`}`,
      );
      throw new JobConfigError(`${job.file}: ${issues.join('; ')} (the schema ${spec.module} exports)`);
    }
    let filter;
    try {
      filter = def.create(parsed.data);
    } catch (e) {
      throw new JobConfigError(`${job.file}: ${field}: ${def.name}.create failed: ${(e as Error).message}`);
    }
    entries.push(entryFor(spec, `${field} (${def.name})`, filter));
  }
  for (const [i, spec] of policyFilters(policy).entries())
    if (spec.type !== 'custom')
      entries.push(entryFor(spec, `privacy policy filters.${i} (${spec.type})`, builtinFilter(spec, undefined, releases(`policy.${i}`))));
  return new FilterChain(entries);
}
