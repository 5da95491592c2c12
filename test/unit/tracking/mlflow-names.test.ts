// MLflow refuses a whole log-batch over one key it does not accept; mlflowKey makes every key one
// it accepts (the rule of mlflow/utils/validation.py, restated below) and leaves valid keys alone;
// mlflowUriProblem names what is wrong with a tracking server's address.
import assert from 'node:assert/strict';
import { posix } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { mlflowKey, mlflowUriProblem } from '../../../src/tracking/index.ts';

/** validate_param_and_metric_name + path_not_unique + MAX_ENTITY_KEY_LENGTH, as MLflow 3.17 checks a key. */
function mlflowAccepts(k: string): boolean {
  // Python's posixpath.normpath: Node's normalize, less a trailing '/'
  const norm = posix.normalize(k).replace(/(.)\/+$/, '$1');
  return (
    /^[\p{L}\p{N}_\-./: ]*$/u.test(k) && k.length <= 250 && norm === k && norm !== '.' && !norm.startsWith('..') && !norm.startsWith('/')
  );
}

test('mlflowKey: keys MLflow refuses become ones it accepts', () => {
  assert.equal(mlflowKey('train_loss'), 'train_loss');
  assert.equal(mlflowKey('result/val_loss'), 'result/val_loss');
  assert.equal(mlflowKey('acc@top-1 (%)'), 'acc_top-1 ___');
  assert.equal(mlflowKey('a//b'), 'a/_/b');
  assert.equal(mlflowKey('/abs/../x/'), '_/abs/_/x/_');
  assert.equal(mlflowKey('..'), '_');
  assert.equal(mlflowKey('Verlust ü'), 'Verlust ü');
  assert.equal(mlflowKey('x'.repeat(256)).length, 250);
  assert.ok(mlflowAccepts(mlflowKey(`${'y'.repeat(249)}/z`)));
});

test('mlflowKey: any key of 1-256 characters comes out accepted; an accepted key is unchanged', () => {
  fc.assert(
    fc.property(
      fc.string({ minLength: 1, maxLength: 256, unit: fc.constantFrom('a', 'Z', '0', '_', '-', '.', '/', ':', ' ', '@', 'é', '\n') }),
      (k) => {
        const m = mlflowKey(k);
        assert.ok(mlflowAccepts(m), JSON.stringify([k, m]));
        if (mlflowAccepts(k) && k !== '') assert.equal(m, k);
      },
    ),
    { numRuns: 5000 },
  );
});

test('mlflowUriProblem: an http(s) address passes; anything else is named', () => {
  assert.equal(mlflowUriProblem('http://127.0.0.1:5000'), null);
  assert.equal(mlflowUriProblem('https://mlflow.example.org/prefix/'), null);
  assert.match(mlflowUriProblem('127.0.0.1:5000')!, /is not http\(s\)|is not a URL/);
  assert.match(mlflowUriProblem('not a url')!, /is not a URL/);
  assert.match(mlflowUriProblem('file:///tmp/mlruns')!, /is not http\(s\)/);
  assert.match(mlflowUriProblem('http://me:secret@host:5000')!, /credentials/);
  assert.doesNotMatch(mlflowUriProblem('http://me:secret@host:5000')!, /secret/);
  assert.match(mlflowUriProblem('http://host:5000/?x=1')!, /no query/);
});
