// Shortened end-to-end run of the protein experiment (the CLI's --quick
// settings): real DeepLoc data, built-in features, 3 sites, FedAvg and FedProx
// through the in-process simulator.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { BEGIN, END, writeReport } from '../../../examples/protein/src/report.ts';
import { type ExperimentResult, meanLocal, runExperiment } from '../../../examples/protein/src/runner.ts';

describe('protein experiment, quick mode', () => {
  let tmp = '';
  let result: ExperimentResult | undefined;
  after(() => rm(tmp, { recursive: true, force: true }));

  it('every method beats the majority-class rate; FL beats the mean of local-only', async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'protein-e2e-'));
    const lines: string[] = [];
    result = await runExperiment({
      alphas: [1],
      lengthSkew: false,
      sites: 3,
      rounds: 3,
      localEpochs: 1,
      hidden: [64],
      dropout: 0.3,
      batchSize: 64,
      lr: 1e-3,
      weightDecay: 1e-3,
      classWeighted: false,
      proxMu: 0.1,
      seed: 1,
      heldOut: 0.15,
      cacheDir: path.join(tmp, 'cache'),
      workspace: path.join(tmp, 'ws'),
      log: (l) => lines.push(l),
    });
    const r = result;
    assert.equal(r.data.train + r.data.test, 4446 - 23);
    assert.equal(r.data.hard, 490);
    assert.ok(
      lines.some((l) => /site-3 .* \d+$/m.test(l)),
      'site histograms are printed',
    );
    const s = r.settings[0]!;
    assert.deepEqual(
      s.methods.map((m) => m.kind),
      ['local', 'local', 'local', 'central', 'fedavg', 'fedprox'],
    );
    assert.equal(
      s.methods.filter((m) => m.kind === 'local').reduce((n, m) => n + m.samples, 0),
      r.data.train,
    );
    for (const m of s.methods.filter((x) => x.kind === 'local'))
      assert.deepEqual(
        m.curve.map((p) => p[0]),
        [0, 1, 2, 3],
        `${m.name} curve`,
      );
    for (const m of s.methods.filter((x) => x.kind !== 'local')) {
      assert.ok(m.test.accuracy > r.majority.test + 0.05, `${m.name}: ${m.test.accuracy} vs majority ${r.majority.test}`);
      assert.ok(m.hard.accuracy > r.majority.hard, `${m.name} on setHARD: ${m.hard.accuracy} vs majority ${r.majority.hard}`);
      assert.ok(m.test.macroF1 > 0 && m.test.macroF1 <= 1);
      // initial model + one point per round
      assert.deepEqual(
        m.curve.map((p) => p[0]),
        [0, 1, 2, 3],
      );
    }
    const fedavg = s.methods.find((m) => m.kind === 'fedavg')!;
    assert.ok(fedavg.test.accuracy > meanLocal(s), `FedAvg ${fedavg.test.accuracy} vs mean local ${meanLocal(s)}`);
    // the curve's last point is the final global model
    assert.equal(fedavg.curve.at(-1)![1], fedavg.test.accuracy);
    // every method ran through the Client API trainer in the simulator (local-only
    // and centralized as one-site federations), one workspace per run
    assert.deepEqual((await readdir(path.join(tmp, 'ws'))).sort(), [
      'alpha-1-fedavg',
      'alpha-1-fedprox',
      'alpha-1-local-site-1',
      'alpha-1-local-site-2',
      'alpha-1-local-site-3',
      'centralized',
    ]);
  });

  it('writes the results block, SVG plots and JSON; keeps hand-written text', async () => {
    assert.ok(result, 'needs the run above');
    const docPath = path.join(tmp, 'docs', 'protein.md');
    const assetDir = path.join(tmp, 'docs', 'protein');
    await writeReport(result, { command: 'test', docPath, assetDir, machine: 'test' });
    const hand = '# Title\n\nHand-written intro.\n\n';
    const first = await readFile(docPath, 'utf8');
    await import('node:fs/promises').then((fs) =>
      fs.writeFile(docPath, hand + first.slice(first.indexOf(BEGIN)) + '\n\nHand-written outro.\n'),
    );
    await writeReport(result, { command: 'test again', docPath, assetDir, machine: 'test' });
    const doc = await readFile(docPath, 'utf8');
    assert.ok(doc.startsWith(hand) && doc.includes('Hand-written outro.'));
    assert.equal(doc.split(BEGIN).length, 2);
    assert.equal(doc.split(END).length, 2);
    assert.match(doc, /test again/);
    assert.match(doc, /\| \*\*FedAvg\*\* \| \d+ \| 0\.\d{3} \|/);
    assert.match(doc, /!\[accuracy vs round, alpha-1\]\(protein\/accuracy-alpha-1\.svg\)/);
    const files = (await readdir(assetDir)).sort();
    assert.deepEqual(files, ['accuracy-alpha-1.svg', 'confusion-alpha-1.svg', 'results.json']);
    for (const f of files.filter((x) => x.endsWith('.svg'))) {
      const svg = await readFile(path.join(assetDir, f), 'utf8');
      assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]*>[\s\S]*<\/svg>$/);
      assert.ok(!svg.includes('NaN'), `${f} has NaN coordinates`);
    }
  });
});
