/** The `--mlflow <uri>` flag's parser (simulate, server start, poc start, metrics): a bad address fails at once, naming the flag. */
import { InvalidArgumentError } from 'commander';
import { mlflowUriProblem } from '../tracking/mlflow-uri.ts';

export function mlflowFlag(v: string): string {
  const problem = mlflowUriProblem(v);
  if (problem) throw new InvalidArgumentError(`--mlflow: ${problem}`);
  return v;
}
