// The server's disk fills while it writes a round checkpoint: a size-limited tmpfs (needs root and
// permission to mount; skipped, saying why, elsewhere). The save fails with the system's ENOSPC, the
// previous checkpoint stays whole and readable, and no half-written file (round file or temp file) is left.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readSafetensors } from '../../../src/core/safetensors-reader.ts';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';
import { ServerWorkspace } from '../../../src/runtime/workspace.ts';

const base = mkdtempSync(join(tmpdir(), 'flotilla-disk-full-'));
const mnt = join(base, 'mnt');
mkdirSync(mnt);
let mounted = false;
let why = '';
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt], { stdio: 'pipe' });
  mounted = true;
} catch (e) {
  why = `cannot mount a size-limited tmpfs here (uid ${process.getuid?.()}): ${String((e as Error).message).split('\n')[0]}`;
}
after(() => {
  if (mounted) execFileSync('umount', [mnt]);
  rmSync(base, { recursive: true, force: true });
});

const model = (n: number, v: number): TensorDict => new Map([['w', f32([n], new Float32Array(n).fill(v))]]);

/** Every file under d, relative. */
function files(d: string, pre = ''): string[] {
  return readdirSync(d, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(d, e.name), `${pre}${e.name}/`) : [`${pre}${e.name}`],
  );
}

test(
  'disk full while writing a checkpoint: clear error, previous checkpoint intact, nothing half-written',
  { skip: mounted ? false : why },
  async () => {
    const ws = new ServerWorkspace(join(mnt, 'job'));
    await ws.saveGlobalModel(1, model(1000, 1.5)); // 4 kB: fits
    const before = files(mnt).sort();
    // 400 kB does not fit in 256 kB
    await assert.rejects(ws.saveGlobalModel(2, model(100_000, 2.5)), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'ENOSPC', String(e));
      return true;
    });
    const after2 = files(mnt).sort();
    assert.deepEqual(after2, before, 'the failed save left files behind'); // no round-2 file, no .tmp-*
    const latest = await readSafetensors(ws.globalModelPath);
    assert.equal(latest.metadata.round, '1');
    assert.deepEqual([...(latest.tensors.get('w')!.data as Float32Array)], new Array(1000).fill(1.5));
    // the space is given back: the next checkpoint that fits is written
    const fs = statfsSync(mnt);
    assert.ok(fs.bavail * fs.bsize > 200_000, `tmpfs still full: ${fs.bavail * fs.bsize} bytes free`);
    await ws.saveGlobalModel(3, model(1000, 3.5));
    assert.equal((await readSafetensors(ws.globalModelPath)).metadata.round, '3');
  },
);
