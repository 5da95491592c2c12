// The layering of docs/architecture.md, checked on the source: a module imports only from its own
// folder and from folders of a lower layer, so no change can quietly make two layers depend on
// each other.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const src = fileURLToPath(new URL('../../../src', import.meta.url));

/** Layer of each folder under src/, bottom up (the diagram in docs/architecture.md). */
const LAYER: Record<string, number> = {
  util: -1,
  core: 0,
  transport: 1,
  client: 1,
  aggregators: 1,
  filters: 1,
  streaming: 2,
  provision: 2,
  algorithms: 2,
  runtime: 3,
  workflows: 4,
  // experiment tracking's store and exporters: below the dashboard, which reads it
  tracking: 4.25,
  // the dashboard and /metrics: fed by the server and the simulator, which both sit above it
  dashboard: 4.5,
  simulator: 5,
  deploy: 5,
  admin: 6,
  cli: 7,
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return /\.(ts|mts|mjs)$/.test(e.name) ? [p] : [];
  });
}

/** Relative specifiers of static imports, re-exports and dynamic imports with a literal path. */
function relativeImports(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm)) out.push(m[1]!);
  return out;
}

const folderOf = (file: string): string => relative(src, file).split(sep)[0]!;

test('every folder under src/ has a layer', () => {
  const folders = readdirSync(src, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
  assert.deepEqual(
    folders.filter((f) => !(f in LAYER)),
    [],
    'add the new folder to LAYER here and to the diagram in docs/architecture.md',
  );
});

test('modules import only from their own folder and from lower layers', () => {
  const upward: string[] = [];
  let checked = 0;
  for (const file of sourceFiles(src)) {
    if (dirname(file) === src) continue; // src/index.ts, the package's `flotilla` entry: above every layer, re-exports them
    const from = folderOf(file);
    for (const spec of relativeImports(readFileSync(file, 'utf8'))) {
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(src + sep)) continue;
      const to = folderOf(target);
      checked++;
      if (to !== from && !(LAYER[to]! < LAYER[from]!))
        upward.push(`${relative(src, file)} imports ${spec} (${from}, layer ${LAYER[from]}, → ${to}, layer ${LAYER[to]})`);
    }
  }
  assert.ok(checked > 100, `only ${checked} imports across folders were found: is the import pattern still right?`);
  assert.deepEqual(upward, []);
});
