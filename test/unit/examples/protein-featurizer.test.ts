import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { type Embedder, Standardizer, combineMoments, embedCached, fitMoments } from '../../../examples/protein/src/embedder.ts';
import { CompositionFeaturizer, FEATURE_DIM, OFFSET, PHYS_FEATURES, featurize } from '../../../examples/protein/src/featurizer.ts';

const AA = 'ACDEFGHIKLMNPQRSTVWY';
const aa = (c: string): number => AA.indexOf(c);
const phys = (v: Float32Array, name: (typeof PHYS_FEATURES)[number]): number => v[OFFSET.phys + PHYS_FEATURES.indexOf(name)]!;
const close = (a: number, b: number, msg: string): void => assert.ok(Math.abs(a - b) < 1e-5, `${msg}: ${a} vs ${b}`);

describe('featurizer, hand-checked on ACDKKDEL', () => {
  // L = 8: A, C, E, L once; D, K twice. Kyte-Doolittle sum:
  // 1.8 + 2.5 − 3.5 − 3.9 − 3.9 − 3.5 − 3.5 + 3.8 = −10.2 → mean −1.275.
  const v = featurize('ACDKKDEL');

  it('has the documented size', () => {
    assert.equal(FEATURE_DIM, 20 + 400 + 20 + 20 + PHYS_FEATURES.length);
    assert.equal(v.length, FEATURE_DIM);
  });

  it('amino-acid composition', () => {
    const expected = new Map([
      ['A', 1 / 8],
      ['C', 1 / 8],
      ['D', 2 / 8],
      ['K', 2 / 8],
      ['E', 1 / 8],
      ['L', 1 / 8],
    ]);
    for (const c of AA) close(v[OFFSET.aac + aa(c)]!, expected.get(c) ?? 0, `aac ${c}`);
    // shorter than the 50-residue windows: terminal compositions equal the whole one
    for (let j = 0; j < 20; j++) {
      close(v[OFFSET.nterm + j]!, v[OFFSET.aac + j]!, `nterm ${AA[j]}`);
      close(v[OFFSET.cterm + j]!, v[OFFSET.aac + j]!, `cterm ${AA[j]}`);
    }
  });

  it('dipeptide composition: 7 pairs, 1/7 each', () => {
    const pairs = new Set(['AC', 'CD', 'DK', 'KK', 'KD', 'DE', 'EL']);
    for (const a of AA) for (const b of AA) close(v[OFFSET.dpc + aa(a) * 20 + aa(b)]!, pairs.has(a + b) ? 1 / 7 : 0, `dpc ${a}${b}`);
  });

  it('physico-chemical summaries', () => {
    close(phys(v, 'log_length'), Math.log(8), 'log_length');
    close(phys(v, 'kd_mean'), -1.275, 'kd_mean');
    close(phys(v, 'net_charge'), (2 - 3) / 8, 'net_charge'); // K,K vs D,D,E
    close(phys(v, 'frac_charged'), 5 / 8, 'frac_charged');
    close(phys(v, 'aromaticity'), 0, 'aromaticity');
    close(phys(v, 'nterm_kd_mean'), -1.275, 'nterm_kd_mean');
    close(phys(v, 'nterm_kd_max15'), -1.275, 'nterm_kd_max15'); // shorter than the window
    close(phys(v, 'nterm30_net_charge'), -1 / 8, 'nterm30_net_charge');
    close(phys(v, 'kd_max19'), -1.275, 'kd_max19');
    close(phys(v, 'tm_segments'), 0, 'tm_segments');
    close(phys(v, 'er_retention'), 1, 'er_retention'); // ends in KDEL
    close(phys(v, 'pts1'), 0, 'pts1');
    close(phys(v, 'nls_kr8'), 2 / 8, 'nls_kr8');
    close(phys(v, 'nglyc_per100'), 0, 'nglyc_per100');
  });

  it('non-standard residues, PTS1, N-glycosylation and TM segments', () => {
    const w = featurize('MNASXSKL');
    close(phys(w, 'frac_nonstandard'), 1 / 8, 'frac_nonstandard');
    close(phys(w, 'pts1'), 1, 'pts1'); // ...SKL
    close(phys(w, 'nglyc_per100'), 100 / 8, 'nglyc'); // N-A-S
    close(w[OFFSET.aac + aa('S')]!, 2 / 8, 'aac S (X counts in L but in no class)');
    // pairs with X are skipped: MN NA AS SK KL
    close(
      [...w.subarray(OFFSET.dpc, OFFSET.dpc + 400)].reduce((a, b) => a + b, 0),
      5 / 7,
      'dpc sum',
    );
    // 40 × L: windows at 0 and 19 qualify (mean KD 3.8 ≥ 1.6), the next would end past 40
    const tm = featurize('L'.repeat(40));
    close(phys(tm, 'tm_segments'), Math.log(3), 'tm_segments');
    close(phys(tm, 'kd_max19'), 3.8, 'kd_max19');
    assert.throws(() => featurize(''), /empty sequence/);
  });
});

describe('standardizer', () => {
  it('z-scores with training statistics; constant features stay finite; moments combine', () => {
    const rows = [Float32Array.of(1, 5), Float32Array.of(3, 5)];
    const s = Standardizer.fit(rows, 2);
    assert.deepEqual([...s.mean], [2, 5]);
    assert.deepEqual([...s.std], [1, 1]);
    assert.deepEqual([...s.apply([Float32Array.of(4, 5)])[0]!], [2, 0]);
    const split = Standardizer.fromMoments(combineMoments([fitMoments(rows.slice(0, 1), 2), fitMoments(rows.slice(1), 2)]));
    assert.deepEqual([...split.mean], [...s.mean]);
    assert.deepEqual([...split.std], [...s.std]);
  });
});

describe('safetensors embedding cache', () => {
  let dir = '';
  after(() => rm(dir, { recursive: true, force: true }));

  it('computes once, then reads the same rows back from one safetensors file', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'protein-cache-'));
    let calls = 0;
    const base = new CompositionFeaturizer();
    const counting: Embedder = { name: base.name, dim: base.dim, embed: async (s) => (calls++, base.embed(s)) };
    const seqs = ['ACDKKDEL', 'MNASXSKL', 'L'.repeat(40)];
    const first = await embedCached(counting, seqs, dir);
    const second = await embedCached(counting, seqs, dir);
    assert.equal(calls, 1);
    assert.equal(first.hit, false);
    assert.equal(second.hit, true);
    assert.equal(second.file, first.file);
    assert.deepEqual(
      second.rows.map((r) => [...r]),
      first.rows.map((r) => [...r]),
    );
    const { tensors, metadata } = await readSafetensors(first.file);
    assert.deepEqual(tensors.get('embeddings')?.shape, [3, FEATURE_DIM]);
    assert.equal(metadata['embedder'], 'aa-composition-v1');
    // different sequences → a different cache file
    await embedCached(counting, seqs.slice(0, 2), dir);
    assert.equal(calls, 2);
    assert.equal((await readdir(dir)).filter((f) => f.endsWith('.safetensors')).length, 2);
  });
});
