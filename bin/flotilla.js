#!/usr/bin/env node
// The flotilla CLI. Jobs are TypeScript loaded at run time, so tsx (a dependency) is registered
// first. A source checkout (src/ beside this file) runs its TypeScript sources directly, with no
// build step to forget; the npm package, which ships dist/ and no src/, runs the compiled JavaScript.
import { existsSync } from 'node:fs';
import { register } from 'tsx/esm/api';

register();
const source = new URL('../src/cli/main.ts', import.meta.url);
await import(existsSync(source) ? source.href : new URL('../dist/cli/main.js', import.meta.url).href);
