/** Where things live, resolved from this file so scripts work from any cwd. */
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const dataDir = path.resolve(repoRoot, '../shared/data');
export const exampleDir = path.resolve(repoRoot, 'examples/llm');
export const baseDir = path.join(exampleDir, 'base');
