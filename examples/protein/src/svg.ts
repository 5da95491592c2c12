/** Hand-rolled SVG charts (no plotting library is installed): line charts and confusion matrices. */

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const fmt = (v: number): string => (Math.round(v * 100) / 100).toString();

/** Colorblind-safe (Okabe–Ito) line colors. */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

export interface Series {
  name: string;
  points: ReadonlyArray<readonly [number, number]>;
  color: string;
  dashed?: boolean;
  width?: number;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  yMin?: number;
  yMax?: number;
  width?: number;
  height?: number;
  /** horizontal reference lines, e.g. the majority-class rate */
  refLines?: ReadonlyArray<{ y: number; label: string }>;
}

function niceStep(range: number, ticks: number): number {
  const raw = range / Math.max(1, ticks);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

export function lineChart(o: LineChartOptions): string {
  const W = o.width ?? 720;
  const H = o.height ?? 400;
  const legendW = 170;
  const m = { l: 56, r: legendW + 16, t: 34, b: 46 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const xs = o.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = o.series.flatMap((s) => s.points.map((p) => p[1]));
  const xMin = Math.min(...xs, 0);
  const xMax = Math.max(...xs, 1);
  const yMin = o.yMin ?? Math.min(...ys);
  const yMax = o.yMax ?? Math.max(...ys);
  const X = (x: number): number => m.l + ((x - xMin) / (xMax - xMin || 1)) * pw;
  const Y = (y: number): number => m.t + ph - ((y - yMin) / (yMax - yMin || 1)) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2 - legendW / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(o.title)}</text>`);
  const yStep = niceStep(yMax - yMin, 6);
  for (let v = Math.ceil(yMin / yStep) * yStep; v <= yMax + 1e-9; v += yStep) {
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${fmt(Y(v))}" y2="${fmt(Y(v))}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${m.l - 6}" y="${fmt(Y(v) + 4)}" text-anchor="end">${fmt(v)}</text>`);
  }
  const xStep = Math.max(1, niceStep(xMax - xMin, 10));
  for (let v = Math.ceil(xMin / xStep) * xStep; v <= xMax + 1e-9; v += xStep) {
    out.push(`<line x1="${fmt(X(v))}" x2="${fmt(X(v))}" y1="${m.t + ph}" y2="${m.t + ph + 4}" stroke="#333"/>`);
    out.push(`<text x="${fmt(X(v))}" y="${m.t + ph + 17}" text-anchor="middle">${fmt(v)}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 8}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  out.push(`<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  for (const r of o.refLines ?? []) {
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${fmt(Y(r.y))}" y2="${fmt(Y(r.y))}" stroke="#888" stroke-dasharray="2 3"/>`);
    out.push(`<text x="${m.l + pw - 4}" y="${fmt(Y(r.y) + 14)}" text-anchor="end" fill="#666" font-size="11">${esc(r.label)}</text>`);
  }
  o.series.forEach((s, i) => {
    const d = s.points.map((p, k) => `${k === 0 ? 'M' : 'L'}${fmt(X(p[0]))},${fmt(Y(p[1]))}`).join(' ');
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 2}"${dash}/>`);
    const ly = m.t + 10 + i * 18;
    const lx = W - legendW;
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="${s.width ?? 2}"${dash}/>`);
    out.push(`<text x="${lx + 30}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

export interface ConfusionPanel {
  title: string;
  /** rows = true class, columns = predicted class (counts) */
  matrix: readonly (readonly number[])[];
}

/** Side-by-side confusion matrices; cell color = row-normalized rate (recall per true class), text = count. */
export function confusionPanels(panels: readonly ConfusionPanel[], labels: readonly string[], title: string): string {
  const k = labels.length;
  const cell = 32;
  const left = 48;
  const top = 58;
  const gap = 30;
  const pw = left + k * cell;
  const W = panels.length * pw + (panels.length - 1) * gap + 20;
  const H = top + k * cell + 40;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="10">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="10" y="16" font-size="13" font-weight="bold">${esc(title)}</text>`);
  panels.forEach((p, n) => {
    const ox = 10 + n * (pw + gap);
    out.push(`<g transform="translate(${ox} 0)">`);
    out.push(`<text x="${left + (k * cell) / 2}" y="34" text-anchor="middle" font-size="12" font-weight="bold">${esc(p.title)}</text>`);
    labels.forEach((l, j) => {
      out.push(`<text x="${left + j * cell + cell / 2}" y="${top - 6}" text-anchor="middle" font-size="9">${esc(l)}</text>`);
      out.push(`<text x="${left - 4}" y="${top + j * cell + cell / 2 + 3}" text-anchor="end">${esc(l)}</text>`);
    });
    for (let i = 0; i < k; i++) {
      const row = p.matrix[i] ?? [];
      const total = row.reduce((a, b) => a + b, 0);
      for (let j = 0; j < k; j++) {
        const c = row[j] ?? 0;
        const r = total > 0 ? c / total : 0;
        // white → blue for off-diagonal mass, white → green on the diagonal
        const shade = Math.round(255 * (1 - r));
        const fill = i === j ? `rgb(${shade},${Math.round(255 - 90 * r)},${shade})` : `rgb(${shade},${shade},255)`;
        out.push(`<rect x="${left + j * cell}" y="${top + i * cell}" width="${cell}" height="${cell}" fill="${fill}" stroke="#ddd"/>`);
        if (c > 0)
          out.push(
            `<text x="${left + j * cell + cell / 2}" y="${top + i * cell + cell / 2 + 3}" text-anchor="middle" fill="${r > 0.55 ? 'white' : 'black'}">${c}</text>`,
          );
      }
    }
    out.push(`<text x="${left + (k * cell) / 2}" y="${top + k * cell + 16}" text-anchor="middle">predicted</text>`);
    out.push(`</g>`);
  });
  out.push(
    `<text x="10" y="${H - 6}" fill="#555">rows: true class; colour: share of the row (recall on the diagonal); numbers: counts</text>`,
  );
  out.push('</svg>');
  return out.join('\n');
}
