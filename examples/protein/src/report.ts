/**
 * Writes the results of runExperiment into the results page: a generated
 * block between markers in docs/examples/protein.md (hand-written text around
 * it is kept), SVG plots next to it and the raw numbers as JSON.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CLASS_SHORT, LOCATIONS } from './deeploc.ts';
import { f1Scores } from './metrics.ts';
import { type ExperimentResult, type MethodResult, type SettingResult, meanLocal } from './runner.ts';
import { PALETTE, type Series, confusionPanels, lineChart } from './svg.ts';

export const BEGIN = '<!-- BEGIN GENERATED RESULTS (examples/protein/src/experiment.ts) -->';
export const END = '<!-- END GENERATED RESULTS -->';

const pct = (v: number): string => (Number.isNaN(v) ? 'n/a' : v.toFixed(3));
const signed = (v: number): string => `${v >= 0 ? '+' : '−'}${Math.abs(v * 100).toFixed(1)} pp`;

function methodRow(m: MethodResult): string {
  return `| ${m.name} | ${m.samples} | ${pct(m.test.accuracy)} | ${pct(m.test.macroF1)} | ${pct(m.hard.accuracy)} | ${pct(m.hard.macroF1)} | ${m.seconds.toFixed(1)} |`;
}

function settingTable(s: SettingResult): string[] {
  const lines = [
    '| model | train samples | test acc | test macro-F1 | setHARD acc | setHARD macro-F1 | time (s) |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const m of s.methods.filter((x) => x.kind === 'local')) lines.push(methodRow(m));
  lines.push(
    `| *mean of local-only* | | *${pct(meanLocal(s))}* | *${pct(meanLocal(s, 'macroF1'))}* | *${pct(meanLocal(s, 'accuracy', 'hard'))}* | *${pct(meanLocal(s, 'macroF1', 'hard'))}* | |`,
  );
  for (const m of s.methods.filter((x) => x.kind !== 'local')) lines.push(methodRow(m).replace(/^\| ([^|]+) \|/, '| **$1** |'));
  return lines;
}

function histogramTable(s: SettingResult): string[] {
  const lines = [`| site | ${CLASS_SHORT.join(' | ')} | total |`, `|---|${CLASS_SHORT.map(() => '---:').join('|')}|---:|`];
  s.histograms.forEach((h, i) => lines.push(`| ${s.siteNames[i]} | ${h.join(' | ')} | ${h.reduce((a, b) => a + b, 0)} |`));
  return lines;
}

function curveSvg(s: SettingResult, r: ExperimentResult): string {
  const series: Series[] = [];
  const fl = s.methods.filter((m) => m.kind === 'fedavg' || m.kind === 'fedprox');
  const central = s.methods.find((m) => m.kind === 'central');
  fl.forEach((m, i) => series.push({ name: m.name, points: m.curve, color: PALETTE[i]!, width: 2.5 }));
  if (central) series.push({ name: 'centralized', points: central.curve, color: PALETTE[6]!, width: 2 });
  // local sites: dashed, in colours distinct from the FL and centralized lines
  const localColors = [PALETTE[2]!, PALETTE[3]!, PALETTE[5]!, PALETTE[4]!];
  s.methods
    .filter((m) => m.kind === 'local')
    .forEach((m, i) =>
      series.push({ name: m.name, points: m.curve, color: localColors[i % localColors.length]!, dashed: true, width: 1.5 }),
    );
  return lineChart({
    title: `${s.title}: shared-test accuracy`,
    xLabel: `round (${r.config.localEpochs} epochs each; local-only and centralized: one-site rounds)`,
    yLabel: 'accuracy on held-out test',
    series,
    yMin: 0,
    yMax: Math.min(1, Math.ceil((Math.max(...series.flatMap((x) => x.points.map((p) => p[1]))) + 0.05) * 10) / 10),
    refLines: [{ y: r.majority.test, label: `majority class ${r.majority.test.toFixed(3)}` }],
  });
}

function confusionSvg(s: SettingResult): string {
  const pick = s.methods.filter((m) => m.kind !== 'local');
  const locals = s.methods.filter((m) => m.kind === 'local');
  const best = locals.reduce<MethodResult | undefined>((b, m) => (!b || m.test.accuracy > b.test.accuracy ? m : b), undefined);
  const panels = [...pick, ...(best ? [best] : [])].map((m) => ({
    title: `${m.name} (acc ${m.test.accuracy.toFixed(3)})`,
    matrix: m.test.confusion,
  }));
  return confusionPanels(panels, CLASS_SHORT, `${s.title}: confusion matrices on the held-out test set`);
}

function perClassTable(r: ExperimentResult): string[] {
  const cols: Array<{ head: string; f1: number[] }> = [{ head: 'centralized', f1: f1Scores(r.central.test.confusion).perClass }];
  for (const s of r.settings) {
    const fa = s.methods.find((m) => m.kind === 'fedavg');
    if (fa) cols.push({ head: `FedAvg ${s.alpha !== undefined ? `α=${s.alpha}` : s.key}`, f1: f1Scores(fa.test.confusion).perClass });
  }
  const support = r.central.test.confusion.map((row) => row.reduce((a, b) => a + b, 0));
  const lines = [`| class | test support | ${cols.map((c) => c.head).join(' | ')} |`, `|---|---:|${cols.map(() => '---:').join('|')}|`];
  LOCATIONS.forEach((loc, k) => lines.push(`| ${loc} | ${support[k]} | ${cols.map((c) => pct(c.f1[k]!)).join(' | ')} |`));
  return lines;
}

export interface ReportContext {
  command: string;
  docPath: string;
  /** folder for SVGs and results.json, relative links are made from docPath */
  assetDir: string;
  machine: string;
}

export async function writeReport(r: ExperimentResult, ctx: ReportContext): Promise<void> {
  await mkdir(ctx.assetDir, { recursive: true });
  const rel = (f: string): string => path.relative(path.dirname(ctx.docPath), path.join(ctx.assetDir, f)).split(path.sep).join('/');
  const c = r.config;
  const out: string[] = [BEGIN, ''];
  out.push('### Run', '', '```sh', ctx.command, '```', '');
  out.push(
    `Machine: ${ctx.machine}. Total wall time ${(r.seconds / 60).toFixed(1)} min (features ${r.data.cacheHit ? 'read from the safetensors cache' : `computed in ${r.data.embedSeconds.toFixed(1)} s`}).`,
    '',
    `Settings: ${c.sites} sites, ${c.rounds} rounds × ${c.localEpochs} local epochs (local-only and centralized: the same trainer as one site, ${c.rounds} × ${c.localEpochs} = ${c.rounds * c.localEpochs} epochs), ` +
      `MLP ${r.data.dim} → ${c.hidden.join(' → ')} → 10 (ReLU, dropout ${c.dropout}), Adam lr ${c.lr}, batch ${c.batchSize}, L2 ${c.weightDecay}, ` +
      `${c.classWeighted ? 'class-weighted' : 'unweighted'} cross-entropy, FedProx mu ${c.proxMu}, seed ${c.seed}, embedder \`${c.embedder}\`.`,
    '',
    `Data: ${r.data.poolSize} sequences pooled from the DeepLoc test and validation files → ${r.data.train} for training (split across sites) and a seeded, stratified ${Math.round(c.heldOut * 100)}% held-out test set of ${r.data.test}; setHARD: ${r.data.hard}. Dropped: ${r.data.dropped.join('; ') || 'none'}. ` +
      `Majority-class rate: ${pct(r.majority.test)} on the held-out test, ${pct(r.majority.hard)} on setHARD.`,
    '',
  );
  out.push('### Summary (held-out test accuracy)', '');
  out.push(
    '| setting | label skew (TV) | mean local-only | best local-only | centralized | FedAvg | FedProx | FedAvg − mean local | FedAvg − centralized | time (s) |',
  );
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const s of r.settings) {
    const locals = s.methods.filter((m) => m.kind === 'local');
    const fa = s.methods.find((m) => m.kind === 'fedavg')!;
    const fp = s.methods.find((m) => m.kind === 'fedprox')!;
    const ml = meanLocal(s);
    out.push(
      `| ${s.alpha !== undefined ? `α = ${s.alpha}` : 'length skew'} | ${s.skew.toFixed(3)} | ${pct(ml)} | ${pct(Math.max(...locals.map((m) => m.test.accuracy)))} | ${pct(r.central.test.accuracy)} | ${pct(fa.test.accuracy)} | ${pct(fp.test.accuracy)} | ${signed(fa.test.accuracy - ml)} | ${signed(fa.test.accuracy - r.central.test.accuracy)} | ${(s.seconds + r.central.seconds).toFixed(0)} |`,
    );
  }
  out.push(
    '',
    `Time per setting includes the centralized run (${r.central.seconds.toFixed(0)} s), which is trained once and shared by all settings. TV: mean total-variation distance between each site's class distribution and the pooled one.`,
    '',
  );
  for (const s of r.settings) {
    const curveFile = `accuracy-${s.key}.svg`;
    const cmFile = `confusion-${s.key}.svg`;
    await writeFile(path.join(ctx.assetDir, curveFile), curveSvg(s, r));
    await writeFile(path.join(ctx.assetDir, cmFile), confusionSvg(s));
    out.push(`### ${s.title}`, '', ...histogramTable(s), '', ...settingTable(s), '');
    out.push(`![accuracy vs round, ${s.key}](${rel(curveFile)})`, '', `![confusion matrices, ${s.key}](${rel(cmFile)})`, '');
  }
  out.push('### Per-class F1 on the held-out test set', '', ...perClassTable(r), '');
  await writeFile(path.join(ctx.assetDir, 'results.json'), `${JSON.stringify(r, null, 1)}\n`);
  out.push(`Raw numbers (every curve point and confusion matrix): [${rel('results.json')}](${rel('results.json')}).`, '', END);
  const block = out.join('\n');

  let doc: string;
  try {
    doc = await readFile(ctx.docPath, 'utf8');
  } catch {
    doc = `# Federated protein subcellular location\n\n## Results\n\n${BEGIN}\n${END}\n`;
  }
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  doc = a >= 0 && b > a ? doc.slice(0, a) + block + doc.slice(b + END.length) : `${doc.trimEnd()}\n\n${block}\n`;
  await mkdir(path.dirname(ctx.docPath), { recursive: true });
  await writeFile(ctx.docPath, doc);
}
