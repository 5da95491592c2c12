/** The initial global model of the PyTorch PEFT job: fresh adapters shaped by the sites' `--rank`/`--seed`. */
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TensorDict } from 'flotilla/core';
import { readJobConfig } from 'flotilla/runtime';
import { argsFromScript, initialModelFor } from '../../src/job-entry.ts';

export function initialModel(): Promise<TensorDict> {
  const { config } = readJobConfig(dirname(fileURLToPath(import.meta.url)));
  return initialModelFor('peft', 'script' in config.executor ? argsFromScript(config.executor.script.args) : {});
}
