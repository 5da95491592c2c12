/**
 * `flotilla new <dir> --template <name>`: a runnable job folder from a template, like
 * `flwr new` or `nvflare job create`. The templates are this installation's examples (shipped
 * in the package), so every template is a job the tests run as written.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { readJobConfig } from '../runtime/job-config.ts';
import { FLOTILLA_ROOT } from '../runtime/job.ts';

export interface Template {
  name: string;
  description: string;
  /** folder of the installation the files come from */
  from: string;
  files: readonly string[];
}

export const TEMPLATES: readonly Template[] = [
  {
    name: 'tfjs',
    description: 'a TypeScript trainer with tfjs (wasm backend): an MLP on data each site generates, FedAvg, cross-site evaluation',
    from: 'examples/hello-fedavg',
    files: ['job.yaml', 'model.ts', 'trainer.ts', 'data.ts', 'tfjs.ts', 'fedprox.ts', 'package.json'],
  },
  {
    name: 'pytorch',
    description: 'a plain PyTorch training script (train_fl.py) at every site, with the Python Client API; FedAvg, cross-site evaluation',
    from: 'examples/pytorch-fedavg',
    files: ['job.yaml', 'train_fl.py', 'train_local.py', 'data.py', 'initial_model.safetensors', 'package.json'],
  },
  {
    name: 'custom-workflow',
    description: "a server workflow of the job's own (workflow.ts: FedAvg until a target loss) and a pure-TypeScript trainer",
    from: 'examples/custom-workflow',
    files: ['job.yaml', 'workflow.ts', 'trainer.ts', 'package.json'],
  },
];

export class NewJobError extends Error {
  override readonly name = 'NewJobError';
}

export function listTemplates(): string {
  const width = Math.max(...TEMPLATES.map((t) => t.name.length));
  return `Templates (flotilla new <dir> --template <name>):\n${TEMPLATES.map((t) => `  ${t.name.padEnd(width)}  ${t.description}`).join('\n')}\n`;
}

export function findTemplate(name: string): Template {
  const t = TEMPLATES.find((x) => x.name === name);
  if (!t)
    throw new NewJobError(
      `--template: no template "${name}"; choose one of ${TEMPLATES.map((x) => x.name).join(', ')} (flotilla new --list)`,
    );
  return t;
}

/** A job name (job-config's rule) from a folder name. */
function jobName(dir: string): string {
  const n = basename(resolve(dir))
    .replace(/[^A-Za-z0-9_.-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 64);
  return n || 'my-job';
}

export interface CreatedJob {
  dir: string;
  name: string;
  files: string[];
  minClients: number;
}

/** Writes the template's files into `dir` (absent or empty), named after the folder. */
export function createJob(dir: string, templateName: string, root = FLOTILLA_ROOT): CreatedJob {
  const t = findTemplate(templateName);
  const target = resolve(dir);
  if (existsSync(target) && readdirSync(target).length > 0)
    throw new NewJobError(`${target} exists and is not empty; name a new folder (flotilla new <dir> --template ${t.name})`);
  const source = join(root, t.from);
  const missing = t.files.filter((f) => !existsSync(join(source, f)));
  if (missing.length)
    throw new NewJobError(
      `this installation lacks ${missing.map((f) => join(t.from, f)).join(', ')} of template "${t.name}" (reinstall flotilla)`,
    );
  const name = jobName(target);
  mkdirSync(target, { recursive: true });
  for (const f of t.files) {
    if (f === 'package.json' || f === 'job.yaml') continue;
    cpSync(join(source, f), join(target, f));
  }
  writeFileSync(join(target, 'job.yaml'), readFileSync(join(source, 'job.yaml'), 'utf8').replace(/^name: .*$/m, `name: ${name}`));
  writeFileSync(join(target, 'package.json'), `${JSON.stringify(packageJson(join(source, 'package.json'), name), null, 2)}\n`);
  const { config } = readJobConfig(target); // a template that does not validate is a bug here, not the user's
  writeFileSync(join(target, 'README.md'), readme(t, name, config.minClients));
  return { dir: target, name, files: [...t.files, 'README.md'].sort(), minClients: config.minClients };
}

/**
 * The example's package.json as the job's own: ES modules, its dependencies minus Flotilla
 * (the installation that runs a job provides `flotilla/...`, see runtime/job-imports.ts)
 * and minus other workspace links.
 */
function packageJson(file: string, name: string): Record<string, unknown> {
  const pkg = JSON.parse(readFileSync(file, 'utf8')) as { description?: string; dependencies?: Record<string, string> };
  const deps = Object.fromEntries(Object.entries(pkg.dependencies ?? {}).filter(([k, v]) => k !== 'flotilla' && !v.startsWith('file:')));
  return {
    name,
    version: '0.1.0',
    private: true,
    type: 'module',
    ...(pkg.description && { description: pkg.description }),
    dependencies: deps,
  };
}

function readme(t: Template, name: string, minClients: number): string {
  const deps = Object.keys((packageJson(join(FLOTILLA_ROOT, t.from, 'package.json'), name).dependencies as Record<string, string>) ?? {});
  return `# ${name}

A Flotilla job from the \`${t.name}\` template: ${t.description}.

\`\`\`sh
${deps.length ? `npm install            # ${deps.join(', ')}\n` : ''}npx flotilla simulate . --clients ${minClients}
\`\`\`

\`job.yaml\` names the model, the workflows and what each site runs. \`flotilla/...\` imports
resolve to the Flotilla that runs the job (simulator, server or site), so it is not a
dependency here. The same folder runs in a deployment: \`npx flotilla admin <kit> submit .\`.
`;
}
