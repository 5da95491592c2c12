/**
 * The workflow registry: a workflow is `{ name, schema, create }` (defineWorkflow). The built-ins
 * are registered here; a job names one by `type`, or its own module with `type: custom`, whose
 * `args` its exported schema validates (errors name the job file and the field).
 */
import { JobConfigError, type WorkflowSpec } from '../runtime/job-config.ts';
import { type Job, importFrom } from '../runtime/job.ts';
import { zodIssues } from '../util/zod-error.ts';
import { BUILTIN_WORKFLOWS } from './builtins.ts';
import type { WorkflowDefinition } from './workflow.ts';

const registry = new Map<string, WorkflowDefinition<never>>(BUILTIN_WORKFLOWS.map((d) => [d.name, d]));

/** Registers a workflow under its name (a program embedding Flotilla); a name taken already is refused. */
export function registerWorkflow<A>(def: WorkflowDefinition<A>): void {
  if (def.name === 'custom' || registry.has(def.name)) throw new Error(`a workflow named "${def.name}" is registered already`);
  registry.set(def.name, def as unknown as WorkflowDefinition<never>);
}

export function registeredWorkflows(): string[] {
  return [...registry.keys()];
}

/** The definition registered under `name` (a built-in's, to build it with other input), or undefined. */
export function registeredWorkflow(name: string): WorkflowDefinition<never> | undefined {
  return registry.get(name);
}

/** Whether `value` has the shape of a workflow definition; what is wrong with it otherwise. */
export function definitionProblem(value: unknown): string | null {
  if (typeof value !== 'object' || value === null) return `it is ${value === null ? 'null' : typeof value}, not { name, schema, create }`;
  const d = value as Partial<Record<'name' | 'schema' | 'create', unknown>>;
  if (typeof d.name !== 'string' || !d.name) return 'its "name" must be a non-empty string';
  if (typeof (d.schema as { safeParse?: unknown } | undefined)?.safeParse !== 'function') return 'its "schema" must be a zod schema';
  if (typeof d.create !== 'function') return 'its "create" must be a function';
  return null;
}

export interface ResolvedWorkflow {
  definition: WorkflowDefinition<never>;
  /** the settings, validated by the definition's schema */
  args: never;
  /** "<index>-<name>": the workflow's label in the chain (its checkpoint folder, its rounds' `workflow`) */
  label: string;
}

/** The definition and validated settings of the job's workflow at `index`. */
export async function resolveWorkflow(job: Job, index: number): Promise<ResolvedWorkflow> {
  const spec: WorkflowSpec = job.config.workflows[index]!;
  const field = `workflows.${index}`;
  if (spec.type !== 'custom') {
    const definition = registry.get(spec.type);
    if (!definition) throw new JobConfigError(`${job.file}: ${field}.type: no workflow "${spec.type}" is registered`);
    return { definition, args: spec as never, label: `${index}-${spec.type}` };
  }
  const value = await importFrom(job, spec.module, spec.export, `${field}.module`);
  const problem = definitionProblem(value);
  if (problem)
    throw new JobConfigError(
      `${job.file}: ${field}: export "${spec.export}" of ${spec.module} is not a workflow definition: ${problem} (see defineWorkflow in flotilla/workflows)`,
    );
  const definition = value as WorkflowDefinition<never>;
  const parsed = definition.schema.safeParse(spec.args);
  if (!parsed.success) {
    const issues = zodIssues(parsed.error).map(
      (l) => `${field}.args${l.startsWith('(top level)') ? l.slice('(top level)'.length) : `.${l}`}`,
    );
    throw new JobConfigError(`${job.file}: ${issues.join('; ')} (the schema ${spec.module} exports)`);
  }
  return { definition, args: parsed.data, label: `${index}-${definition.name}` };
}
