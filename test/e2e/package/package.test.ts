/**
 * The npm package as a user gets it: `npm pack`, the tarball installed into an empty
 * folder (only the registry, through npm's cache), and there `npx flotilla --help`, a job
 * written in that folder simulated (an in-process trainer and a TypeScript script), then
 * the same job run by a POC deployment of the installed CLI.
 *
 * One shortcut, for time: the install skips dependencies' install scripts and takes
 * better-sqlite3's native addon (same pinned version, same Node) from the checkout's
 * node_modules. Its own install script would compile it from source here (no prebuilt
 * binary is reachable), which takes minutes on 2 cores; everything else is the real install.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { freePortPair } from '../../helpers/federation.ts';
import { killPoc } from '../../helpers/poc.ts';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-pack-'));
const app = join(tmp, 'app');

const JOB_YAML = `name: outside
minClients: 2
model:
  module: model.ts
  export: initialModel
workflows:
  - type: fedavg
    rounds: 2
executor:
  trainer:
    module: trainer.ts
    export: trainer
`;
const MODEL_TS = `import { f32, type TensorDict } from 'flotilla/core';
export function initialModel(): TensorDict {
  return new Map([['w', f32([3], [0, 0, 0])]]);
}
`;
// adds 1 to every weight; logs 1 when 'flotilla/core' is the installed package's compiled code
const TRAINER_TS = `import type { ClientAPI } from 'flotilla/client';
import { f32 } from 'flotilla/core';
const fromPackage = /\\/node_modules\\/flotilla\\/dist\\/core\\/index\\.js$/.test(import.meta.resolve('flotilla/core')) ? 1 : 0;
export async function trainer(flare: ClientAPI): Promise<void> {
  await flare.init();
  while (flare.isRunning()) {
    const m = await flare.receive();
    if (!m) break;
    const w = m.params.get('w')!.data as Float32Array;
    flare.log('from_package', fromPackage);
    await flare.send({ ...m, params: new Map([['w', f32([3], w.map((x) => x + 1))]]), meta: { numSamples: 1 } });
  }
}
`;
// the same step as a child process with the module-level Client API (TypeScript, no tsx named)
const SCRIPT_TS = `import * as flare from 'flotilla/client';
import { f32 } from 'flotilla/core';
await flare.init();
while (flare.isRunning()) {
  const m = await flare.receive();
  if (!m) break;
  const w = m.params.get('w')!.data as Float32Array;
  await flare.send({ ...m, params: new Map([['w', f32([3], w.map((x) => x + 1))]]), meta: { numSamples: 1 } });
}
`;

const sh = (cmd: string, args: string[], cwd = app): string =>
  execFileSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
// the documented spelling once (--help), then the bin it runs, without npx's own start-up each call
const npx = (...args: string[]): string => sh('npx', ['flotilla', ...args]);
const flotilla = (...args: string[]): string => sh(join(app, 'node_modules/.bin/flotilla'), args);

function duBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += duBytes(p);
    else if (e.isFile()) n += statSync(p).size;
  }
  return n;
}

after(() => {
  // whatever happened, no POC process outlives the test
  killPoc(join(app, 'poc'));
  rmSync(tmp, { recursive: true, force: true });
});

test(
  'npm pack → install into an empty folder → flotilla --help, simulate and POC-deploy a job written there',
  { timeout: 600_000 },
  async () => {
    const t0 = performance.now();
    const tarball = join(tmp, sh('npm', ['pack', '--silent', '--pack-destination', tmp], repo).trim().split('\n').pop()!);
    assert.ok(existsSync(tarball), tarball);
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'user-app', private: true, type: 'module' }));
    sh('npm', ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball]);
    const addon = 'node_modules/better-sqlite3/build/Release/better_sqlite3.node';
    mkdirSync(join(app, addon, '..'), { recursive: true });
    copyFileSync(join(repo, addon), join(app, addon));
    const installed = readdirSync(join(app, 'node_modules'));
    for (const heavy of ['@tensorflow', 'onnxruntime-node', 'typescript', 'fast-check', 'node-seal'])
      assert.ok(!installed.includes(heavy), `${heavy} is not a dependency of the package`);
    assert.ok(!existsSync(join(app, 'node_modules/flotilla/src')), 'the package ships dist/, not src/');
    console.log(
      `tarball ${(statSync(tarball).size / 1024).toFixed(0)} kB; installed node_modules ${(duBytes(join(app, 'node_modules')) / 2 ** 20).toFixed(1)} MiB; pack + install ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );

    assert.match(npx('--help'), /Usage: flotilla[\s\S]*simulate[\s\S]*poc/);
    // homomorphic encryption is the one feature that needs an optional package (node-seal, 67 MB): without it,
    // provisioning an HE project says what to install
    writeFileSync(
      join(app, 'he-project.yml'),
      'name: he\nhomomorphicEncryption: true\nparticipants:\n  - {type: server, name: server, org: hub, host: localhost, port: 8002}\n' +
        '  - {type: client, name: site-1, org: a}\n  - {type: admin, name: boss@hub.org, org: hub, role: project_admin}\n',
    );
    const he = spawnSync(join(app, 'node_modules/.bin/flotilla'), ['provision', 'he-project.yml', '-o', join(app, 'he-kits')], {
      cwd: app,
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    assert.notEqual(he.status, 0, he.stdout);
    assert.match(he.stderr, /needs the node-seal package.*npm install node-seal@6\.0\.3/);

    const job = join(app, 'job');
    mkdirSync(job);
    writeFileSync(join(job, 'job.yaml'), JOB_YAML);
    writeFileSync(join(job, 'model.ts'), MODEL_TS);
    writeFileSync(join(job, 'trainer.ts'), TRAINER_TS);
    // the exports map's types: the job type-checks against the installed declarations (the checkout's tsc)
    const tsc = join(repo, 'node_modules/typescript/bin/tsc');
    sh(process.execPath, [
      tsc,
      '--noEmit',
      '--strict',
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--types',
      'node',
      '--typeRoots',
      join(repo, 'node_modules/@types'),
      'job/model.ts',
      'job/trainer.ts',
    ]);
    writeFileSync(join(app, 'wrong.ts'), "import { f32 } from 'flotilla/core';\nexport const n: number = f32([1], [1]);\n");
    assert.throws(
      () =>
        sh(process.execPath, [
          tsc,
          '--noEmit',
          '--strict',
          '--module',
          'nodenext',
          '--moduleResolution',
          'nodenext',
          '--types',
          'node',
          '--typeRoots',
          join(repo, 'node_modules/@types'),
          'wrong.ts',
        ]),
      (e: { stdout?: string }) => /Tensor<"F32">' is not assignable to type 'number'/.test(String(e.stdout)),
    );

    assert.match(flotilla('simulate', 'job', '--clients', '2', '--workspace', 'ws'), /Done in/);
    const model = (await readSafetensors(join(app, 'ws/server/global_model.safetensors'))).tensors;
    assert.deepEqual([...(model.get('w')!.data as Float32Array)], [2, 2, 2]);
    const logged = readFileSync(join(app, 'ws/server/metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { key: string; value: number });
    const fromPackage = logged.filter((m) => m.key === 'from_package');
    assert.equal(fromPackage.length, 4);
    assert.ok(
      fromPackage.every((m) => m.value === 1),
      'the job imported the installed package',
    );

    const scriptJob = join(app, 'script-job');
    mkdirSync(scriptJob);
    writeFileSync(
      join(scriptJob, 'job.yaml'),
      JOB_YAML.replace(/executor:[\s\S]*$/, 'executor:\n  script:\n    command: node\n    args: [train.ts]\n'),
    );
    writeFileSync(join(scriptJob, 'model.ts'), MODEL_TS);
    writeFileSync(join(scriptJob, 'train.ts'), SCRIPT_TS);
    assert.match(flotilla('simulate', 'script-job', '--clients', '2', '--workspace', 'ws-script'), /Done in/);
    assert.deepEqual(
      [...((await readSafetensors(join(app, 'ws-script/server/global_model.safetensors'))).tensors.get('w')!.data as Float32Array)],
      [2, 2, 2],
    );

    // the templates ship with the package
    assert.match(flotilla('new', '--list'), /tfjs[\s\S]*pytorch/);
    assert.match(flotilla('new', 'from-template', '--template', 'tfjs'), /Created job "from-template"/);
    assert.ok(['job.yaml', 'trainer.ts', 'model.ts', 'tfjs.ts', 'package.json'].every((f) => existsSync(join(app, 'from-template', f))));

    const port = await freePortPair();
    assert.match(flotilla('poc', 'prepare', '--clients', '2', '-w', 'poc', '-p', String(port)), /POC prepared/);
    assert.match(flotilla('poc', 'start', '-w', 'poc'), /Started server, site-1, site-2/);
    const kit = 'poc/poc/prod_01/admin@poc.example';
    try {
      // poc start returns once the processes are spawned: wait for both sites, as deploy-poc.test.ts does
      const up = Date.now() + 90_000;
      while (
        !/site-1[\s\S]*site-2/.test(
          spawnSync(join(app, 'node_modules/.bin/flotilla'), ['admin', kit, 'sites'], { cwd: app, encoding: 'utf8' }).stdout ?? '',
        )
      ) {
        assert.ok(Date.now() < up, 'the POC sites connected within 90 s');
        await new Promise((r) => setTimeout(r, 500));
      }
      const jobId = (JSON.parse(flotilla('admin', kit, 'submit', 'job', '--json')) as { jobId: string }).jobId;
      const deadline = Date.now() + 90_000;
      let status: { state: string; detail?: string; result?: { rounds: unknown[] } } = { state: 'SUBMITTED' };
      while (Date.now() < deadline && !['FINISHED', 'FAILED', 'ABORTED'].includes(status.state)) {
        await new Promise((r) => setTimeout(r, 500));
        status = JSON.parse(flotilla('admin', kit, 'status', jobId, '--json')) as typeof status;
      }
      assert.equal(status.state, 'FINISHED', status.detail);
      assert.equal(status.result?.rounds.length, 2);
      assert.match(flotilla('admin', kit, 'download', jobId, '-o', 'downloads'), /Downloaded job/);
    } finally {
      assert.match(flotilla('poc', 'stop', '-w', 'poc'), /Stopped server, site-1, site-2/);
    }
    console.log(`package test: ${((performance.now() - t0) / 1000).toFixed(1)} s in all`);
  },
);
