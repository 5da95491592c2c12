/**
 * A strict FASTA reader for protein sequences. Every error names the source
 * and the 1-based line (and column for bad residues), because a silently
 * skipped record would change the data set without anyone noticing.
 */

export interface FastaRecord {
  /** first whitespace-delimited token of the header */
  id: string;
  /** rest of the header after the id, trimmed ('' when none) */
  description: string;
  /** upper-case residues */
  sequence: string;
  /** 1-based line of the header */
  line: number;
}

export class FastaError extends Error {
  constructor(
    readonly source: string,
    readonly line: number,
    message: string,
  ) {
    super(`${source}:${line}: ${message}`);
    this.name = 'FastaError';
  }
}

/**
 * IUPAC one-letter amino-acid codes: the 20 standard residues plus
 * U (selenocysteine), O (pyrrolysine), B (D/N), Z (E/Q), J (I/L), X (unknown).
 * DeepLoc contains a few X, Z, U and B.
 */
export const STANDARD_AMINO_ACIDS = 'ACDEFGHIKLMNPQRSTVWY';
const LEGAL = new Set([...`${STANDARD_AMINO_ACIDS}UOBZJX`]);

export function parseFasta(text: string, source = '<input>'): FastaRecord[] {
  const lines = text.split(/\r?\n/);
  const out: FastaRecord[] = [];
  let current: { id: string; description: string; parts: string[]; line: number } | undefined;

  const finish = (): void => {
    if (!current) return;
    const sequence = current.parts.join('');
    if (sequence.length === 0) throw new FastaError(source, current.line, `record "${current.id}" has an empty sequence`);
    out.push({ id: current.id, description: current.description, sequence, line: current.line });
  };

  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const raw = lines[i]!;
    const line = raw.trim();
    if (line.length === 0) continue; // blank lines between records are harmless
    if (line.startsWith('>')) {
      finish();
      const header = line.slice(1).trim();
      if (header.length === 0) throw new FastaError(source, lineNo, 'header has no identifier (">" alone)');
      const m = /^(\S+)\s*(.*)$/.exec(header)!;
      current = { id: m[1]!, description: (m[2] ?? '').trim(), parts: [], line: lineNo };
      continue;
    }
    if (!current) throw new FastaError(source, lineNo, 'sequence data before the first ">" header');
    const seq = line.toUpperCase();
    for (let c = 0; c < seq.length; c++) {
      const ch = seq[c]!;
      if (!LEGAL.has(ch)) {
        const col = raw.indexOf(line) + c + 1;
        throw new FastaError(source, lineNo, `illegal residue ${JSON.stringify(line[c])} at column ${col} in record "${current.id}"`);
      }
    }
    current.parts.push(seq);
  }
  finish();
  return out;
}
