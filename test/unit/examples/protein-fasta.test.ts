import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CLASS_SHORT,
  LOCATIONS,
  classCounts,
  heldOutSplit,
  loadDeepLoc,
  parseDeepLoc,
  parseDeepLocHeader,
} from '../../../examples/protein/src/deeploc.ts';
import { FastaError, parseFasta } from '../../../examples/protein/src/fasta.ts';

function fastaError(fn: () => unknown): FastaError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof FastaError, `expected FastaError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected a FastaError');
}

describe('parseFasta', () => {
  it('parses multi-line records, blank lines, CRLF and lower case', () => {
    const recs = parseFasta('>P1 Nucleus-S test\r\nMKV\r\nlla\r\n\r\n>P2\nWWY\n', 'x.fasta');
    assert.deepEqual(recs, [
      { id: 'P1', description: 'Nucleus-S test', sequence: 'MKVLLA', line: 1 },
      { id: 'P2', description: '', sequence: 'WWY', line: 5 },
    ]);
  });

  it('accepts the IUPAC ambiguity codes found in DeepLoc (X, B, Z, U)', () => {
    assert.equal(parseFasta('>a\nMXBZUO\n')[0]!.sequence, 'MXBZUO');
  });

  it('rejects sequence data before any header, with its line', () => {
    const e = fastaError(() => parseFasta('\nMKV\n>a\nMK\n', 'f.fa'));
    assert.equal(e.line, 2);
    assert.match(e.message, /^f\.fa:2: sequence data before the first ">" header/);
  });

  it('rejects an illegal residue with line and column', () => {
    const e = fastaError(() => parseFasta('>a x\nMKV\nMK1V\n', 'f.fa'));
    assert.equal(e.line, 3);
    assert.match(e.message, /f\.fa:3: illegal residue "1" at column 3 in record "a"/);
    assert.equal(fastaError(() => parseFasta('>a\nMK*\n')).line, 2);
    assert.equal(fastaError(() => parseFasta('>a\nMK-V\n')).line, 2);
  });

  it('rejects an empty sequence (header followed by a header, or at the end)', () => {
    const mid = fastaError(() => parseFasta('>a\nMK\n>b desc\n>c\nMK\n'));
    assert.equal(mid.line, 3);
    assert.match(mid.message, /record "b" has an empty sequence/);
    const end = fastaError(() => parseFasta('>a\nMK\n\n>z\n\n'));
    assert.equal(end.line, 4);
  });

  it('rejects a header without an identifier', () => {
    const e = fastaError(() => parseFasta('>a\nMK\n>   \nMK\n'));
    assert.equal(e.line, 3);
    assert.match(e.message, /header has no identifier/);
  });
});

describe('DeepLoc headers', () => {
  it('parses ID Location-M|S|U with and without the set field', () => {
    assert.deepEqual(parseDeepLocHeader('Q9H400', 'Cell.membrane-M test', 'f', 1), {
      id: 'Q9H400',
      location: 'Cell.membrane',
      membrane: 'M',
      set: 'test',
    });
    assert.deepEqual(parseDeepLocHeader('Q9Y4C2', 'Lysosome/Vacuole-U', 'f', 1), {
      id: 'Q9Y4C2',
      location: 'Lysosome/Vacuole',
      membrane: 'U',
    });
    assert.equal(parseDeepLocHeader('P35123', 'Cytoplasm-Nucleus-U', 'f', 1).location, 'Cytoplasm-Nucleus');
  });

  it('rejects bad header formats with file and line', () => {
    const cases: Array<[string, RegExp]> = [
      ['Nucleus', /no "-M", "-S" or "-U" membrane tag/],
      ['Nucleus-Q test', /membrane/],
      ['Ribosome-S test', /location/],
      ['', /expected 1 or 2 fields/],
      ['Nucleus-S test extra', /expected 1 or 2 fields/],
    ];
    for (const [desc, re] of cases) {
      const e = fastaError(() => parseDeepLocHeader('P1', desc, 'd.fasta', 7));
      assert.equal(e.line, 7);
      assert.match(e.message, /^d\.fasta:7: bad DeepLoc header/);
      assert.match(e.message, re);
    }
    const e = fastaError(() => parseDeepLoc('>A1 Nucleus-S\nMK\n>A2 Nowhere-S\nMK\n', 'g.fasta'));
    assert.equal(e.line, 3);
  });

  it('maps to class ids and reports dual-label entries as dropped', () => {
    const f = parseDeepLoc('>A1 Nucleus-S\nMK\n>A2 Cytoplasm-Nucleus-U\nMK\n>A3 Peroxisome-M\nMK\n', 'g.fasta');
    assert.deepEqual(
      f.samples.map((s) => [s.id, s.label]),
      [
        ['A1', 0],
        ['A3', 9],
      ],
    );
    assert.equal(f.dropped.length, 1);
    assert.deepEqual(
      { ...f.dropped[0]!, reason: f.dropped[0]!.reason.slice(0, 13) },
      { id: 'A2', file: 'g.fasta', line: 3, reason: 'dual location' },
    );
  });
});

describe('the real DeepLoc files', () => {
  it('load with the documented counts: 4,446 − 23 dual-label, 490 setHARD', async () => {
    const d = await loadDeepLoc();
    assert.equal(d.pool.length, 4446 - 23);
    assert.equal(d.hard.length, 490);
    assert.equal(d.dropped.length, 23);
    assert.ok(d.dropped.every((x) => x.file === 'deeploc_our_val_set.fasta' && x.reason.includes('Cytoplasm-Nucleus')));
    const counts = classCounts(d.pool.map((s) => s.label));
    assert.equal(counts.length, LOCATIONS.length);
    assert.equal(CLASS_SHORT.length, LOCATIONS.length);
    assert.equal(counts[0], 806 + 476); // Nucleus
    assert.equal(counts[9], 30 + 23); // Peroxisome
  });

  it('held-out slice: stratified, disjoint, seeded', async () => {
    const labels = (await loadDeepLoc()).pool.map((s) => s.label);
    const a = heldOutSplit(labels, 0.15, 1);
    const b = heldOutSplit(labels, 0.15, 1);
    const c = heldOutSplit(labels, 0.15, 2);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.test, c.test);
    assert.equal(a.train.length + a.test.length, labels.length);
    assert.equal(new Set([...a.train, ...a.test]).size, labels.length);
    const all = classCounts(labels);
    const test = classCounts(a.test.map((i) => labels[i]!));
    all.forEach((n, k) => assert.equal(test[k], Math.round(0.15 * n), `class ${k}`));
  });
});
