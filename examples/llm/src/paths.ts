/** Where things live, resolved from this file so scripts work from any cwd. */
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const exampleDir = path.resolve(repoRoot, 'examples/llm');
/** the example's copy of the public data it reads (source and license of each file: data/README.md) */
export const dataDir = path.join(exampleDir, 'data');
export const baseDir = path.join(exampleDir, 'base');
