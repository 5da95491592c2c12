// Preloaded (NODE_OPTIONS=--import) into the training scripts a site starts, so a Node script
// (`script: {command: node, args: [train.ts]}`) may be TypeScript and imports 'flotilla/...' from
// the installation that runs the site, as PYTHONPATH={flotillaRoot}/python does for Python.
import { existsSync } from 'node:fs';
import { register } from 'tsx/esm/api';

register();
const source = new URL('./job-imports.ts', import.meta.url);
const { registerJobImports } = await import(existsSync(source) ? source.href : new URL('./job-imports.js', import.meta.url).href);
registerJobImports();
