// Lint: typescript-eslint's type-checked rules where they catch real bugs (promises nobody awaits,
// unused code, `any` leaking through boundaries); formatting is prettier's job.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['**/node_modules/', 'dist/', '.venv/', '.venv-mlflow/', 'workspace/', 'examples/*/data/', 'examples/*/base/', 'test/fixtures/', 'python/'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // node:test's test()/describe() return promises the runner itself awaits
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after'] }],
        },
      ],
      // an async function without await is how an interface that returns a promise is implemented synchronously
      '@typescript-eslint/require-await': 'off',
      // abort reasons are whatever the aborter passed (`any`); rejecting with a literal is still refused
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingAny: true, allowThrowingUnknown: true }],
      // numbers, arrays and null read fine in messages; objects ("[object Object]") do not
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true, allowArray: true, allowNullish: true },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: { ...globals.node } },
  },
  {
    // the dashboard's page runs in a browser, with uPlot loaded by its own script tag
    files: ['src/dashboard/assets/**/*.js'],
    languageOptions: { sourceType: 'module', globals: { ...globals.browser, uPlot: 'readonly' } },
  },
);
