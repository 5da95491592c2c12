/** `--help` for the bench scripts: prints the script's leading doc comment (its usage) and exits before any work. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function exitOnHelp(scriptUrl: string): void {
  if (!process.argv.includes('--help')) return;
  const m = /\/\*\*([\s\S]*?)\*\//.exec(readFileSync(fileURLToPath(scriptUrl), 'utf8'));
  process.stdout.write(
    `${(m?.[1] ?? '')
      .split('\n')
      .map((l) => l.replace(/^ ?\* ?/, ''))
      .join('\n')
      .trim()}\n`,
  );
  process.exit(0);
}
