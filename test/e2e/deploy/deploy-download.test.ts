// Streamed downloads of job results (Admin.Download): a model larger than one gRPC message crosses
// in 1 MiB pieces over real gRPC + mutual TLS and arrives bit-identical; a truncated, corrupted,
// misordered or path-escaping stream is refused and leaves no file under the real name.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type DownloadProgress, listResults, receiveResults, sendResults } from '../../../src/deploy/download.ts';
import { createCA, issueCert } from '../../../src/provision/ca.ts';
import { GrpcClient } from '../../../src/transport/grpc/client.ts';
import { GrpcServer } from '../../../src/transport/grpc/server.ts';
import type { DownloadPieceWire } from '../../../src/transport/grpc/wire.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-download-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function results(): string {
  const root = join(tmp, 'server-results');
  mkdirSync(join(root, 'round-1'), { recursive: true });
  const big = Buffer.alloc(40 << 20); // 40 MiB: over the 16 MiB a single admin reply may carry
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE((i ^ 0x9e3779b9) >>> 0, i);
  writeFileSync(join(root, 'global_model.safetensors'), big);
  writeFileSync(join(root, 'round-1', 'metrics.jsonl'), '{"round":1}\n');
  writeFileSync(join(root, 'empty.txt'), '');
  return root;
}

async function collect(root: string): Promise<DownloadPieceWire[]> {
  const out: DownloadPieceWire[] = [];
  await sendResults(root, async (p) => void out.push({ kind: Object.keys(p)[0] as DownloadPieceWire['kind'], ...p }));
  return out;
}

async function* replay(pieces: DownloadPieceWire[]): AsyncGenerator<DownloadPieceWire> {
  yield* pieces;
}

test('a 40 MiB model downloads over gRPC + mutual TLS bit-identical, with progress against the manifest total', async () => {
  const root = results();
  const ca = await createCA('dl', 1);
  const notAfter = new Date(Date.now() + 3_600_000);
  const srvCert = await issueCert(ca, { subject: { cn: 'server', org: 'hub', ou: 'server' }, hosts: ['localhost', '127.0.0.1'], notAfter });
  const adm = await issueCert(ca, { subject: { cn: 'boss@hub.org', org: 'hub', ou: 'project_admin' }, notAfter });
  let asked = '';
  const server = new GrpcServer({
    host: '127.0.0.1',
    port: 0,
    caPem: ca.certPem,
    certPem: srvCert.certPem,
    keyPem: srvCert.keyPem,
    handlers: {
      onConnect: () => 'no sites here',
      onAdmin: async () => ({ ok: false, json: '"no commands here"', blob: new Uint8Array(0) }),
      onDownload: async (peer, req, write) => {
        asked = `${peer.name}:${req.args_json}`;
        if ((JSON.parse(req.args_json) as { job?: string }).job !== 'j1') throw new Error('no job j9');
        await sendResults(root, write);
      },
    },
  });
  const port = await server.start();
  const client = new GrpcClient({
    host: '127.0.0.1',
    port,
    serverName: 'localhost',
    caPem: ca.certPem,
    certPem: adm.certPem,
    keyPem: adm.keyPem,
  });
  try {
    const dest = join(tmp, 'dl');
    const seen: DownloadProgress[] = [];
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    const files = await receiveResults(
      client.download({ command: 'download', args_json: '{"job":"j1"}', blob: new Uint8Array(0) }),
      dest,
      (p) => seen.push(p),
    );
    assert.equal(asked, 'boss@hub.org:{"job":"j1"}', 'the caller is named by its certificate');
    assert.deepEqual(files, await listResults(root));
    for (const f of files)
      assert.ok(readFileSync(join(dest, f.path)).equals(readFileSync(join(root, f.path))), `${f.path} is bit-identical`);
    const total = files.reduce((s, f) => s + f.size, 0);
    assert.equal(seen.at(-1)?.bytes, total);
    assert.ok(seen.every((p) => p.total === total));
    assert.ok(seen.length > 20, 'progress is reported piece by piece');
    await new Promise((r) => setImmediate(r));
    process.off('warning', onWarning);
    assert.deepEqual(warnings, [], 'no listener pile-up while the server waits for room');
    // a refusal from the server reaches the admin as its message
    await assert.rejects(
      receiveResults(client.download({ command: 'download', args_json: '{"job":"j9"}', blob: new Uint8Array(0) }), join(tmp, 'dl9')),
      /no job j9/,
    );
  } finally {
    client.close();
    await server.close(500);
  }
});

test('corrupted, truncated, misordered and path-escaping downloads are refused; no file is left under the real name', async () => {
  const root = results();
  const good = await collect(root);
  const model = 'global_model.safetensors';
  const startOf = good.findIndex((p) => p.start?.path === model);
  const tries: [string, DownloadPieceWire[], RegExp][] = [
    [
      'a flipped byte',
      good.map((p, i) => (i === startOf + 3 && p.data ? { kind: 'data' as const, data: Buffer.from(p.data).fill(7, 0, 1) } : p)),
      /global_model\.safetensors" is corrupt: xxhash64/,
    ],
    ['a missing piece', good.filter((_, i) => i !== startOf + 3), /ended after \d+ of \d+ bytes/],
    ['the stream cut short', good.slice(0, startOf + 5), /download ended early: \d of 3 files complete/],
    [
      'a file the manifest did not announce next',
      [good[0]!, { kind: 'start', start: { path: 'other.bin', size: 1 } }],
      /"other\.bin" is not the next one the manifest listed/,
    ],
    [
      'a path outside the folder',
      [{ kind: 'manifest', manifest: { files: [{ path: '../escape.txt', size: 1 }] } }],
      /unsafe path "\.\.\/escape\.txt"/,
    ],
    ['data before any file', [good[0]!, { kind: 'data', data: Buffer.from('x') }], /data outside a file/],
    ['no manifest', [], /without a manifest/],
  ];
  for (const [what, pieces, want] of tries) {
    const dest = join(tmp, `bad-${what.replaceAll(' ', '-')}`);
    await assert.rejects(receiveResults(replay(pieces), dest), want, what);
    assert.ok(!existsSync(join(dest, model)), `${what}: no ${model} under the real name`);
    assert.ok(!existsSync(join(dest, `${model}.part`)), `${what}: the partial file is removed`);
    assert.ok(!existsSync(join(tmp, 'escape.txt')));
  }
});
