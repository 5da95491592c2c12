/**
 * examples/pytorch-fedavg, unchanged, in POC mode: `poc prepare --clients 3`
 * (the job's minClients), `poc start` (server and three client processes,
 * gRPC with mutual TLS), `admin submit`, `admin status` until FINISHED,
 * `admin download`, `poc stop`, all through the CLI as a user types them.
 * Each site runs train_fl.py with the test Python (FLOTILLA_PYTHON, else Debian's /usr/bin/python3) and python3-torch.
 * About 22 s on the 2-core dev machine under load, most of it starting
 * processes and importing torch.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { freePortPair, repo } from '../../helpers/federation.ts';
import { flotilla as run, killPoc, waitForJobEnd, waitForSites } from '../../helpers/poc.ts';
import { PYTHON } from '../../helpers/python.ts';

const example = join(repo, 'examples/pytorch-fedavg');
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-pypoc-'));
const ws = join(tmp, 'poc');

after(() => {
  // whatever happened, no POC process outlives the test
  killPoc(ws);
  rmSync(tmp, { recursive: true, force: true });
});

test(
  'examples/pytorch-fedavg runs in POC mode and its global model downloads; then again with executor.params: file',
  { timeout: 240_000 },
  async () => {
    const r = spawnSync(PYTHON, ['-c', 'import numpy, torch']);
    if (r.error || r.status !== 0) assert.fail(`${PYTHON} cannot import numpy and torch: apt-get install -y python3-numpy python3-torch`);
    const clients = /minClients: (\d+)/.exec(readFileSync(join(example, 'job.yaml'), 'utf8'))?.[1];
    assert.equal(clients, '3');
    assert.match(run('poc', 'prepare', '--clients', clients, '-w', ws, '-p', String(await freePortPair())), /POC prepared/);
    assert.match(run('poc', 'start', '-w', ws), /Started server, site-1, site-2, site-3/);
    const admin = join(ws, 'poc', 'prod_01', 'admin@poc.example');
    try {
      // the processes are detached: wait until the server answers and all three sites are connected
      assert.deepEqual((await waitForSites(admin, 3, 30_000)).sort(), ['site-1', 'site-2', 'site-3']);
      const id = /Submitted job (\S+)/.exec(run('admin', admin, 'submit', example))?.[1];
      assert.ok(id, 'submit prints the job id');
      type Metrics = Record<string, number>;
      type Status = {
        state: string;
        detail?: string | null;
        sites?: string[];
        result?: { rounds: { metrics: Metrics; failures: object }[]; crossSite?: Record<string, unknown> };
      };
      let status = await waitForJobEnd<Status>(admin, id);
      assert.equal(status.state, 'FINISHED', JSON.stringify(status));
      assert.equal(status.detail, '5 rounds on 3 sites');
      assert.deepEqual(status.sites, ['site-1', 'site-2', 'site-3']);
      const rounds = status.result!.rounds;
      assert.equal(rounds.length, 5);
      for (const r of rounds) assert.deepEqual(r.failures, {});
      assert.ok(rounds[4]!.metrics.val_loss! < rounds[0]!.metrics.val_loss!, 'val_loss falls');
      assert.ok(rounds[4]!.metrics.val_accuracy! > 0.8, `val_accuracy ${rounds[4]!.metrics.val_accuracy}`);
      assert.deepEqual(Object.keys(status.result!.crossSite ?? {}).sort(), ['server', 'site-1', 'site-2', 'site-3']);
      assert.match(run('admin', admin, 'download', id, '-o', join(tmp, 'downloads')), /Downloaded job/);
      const dir = join(tmp, 'downloads', id);
      const files = readdirSync(dir, { recursive: true }).map(String);
      assert.ok(files.includes('global_model.safetensors'), `the global model among ${files.join(', ')}`);
      for (let r = 0; r < 5; r++) assert.ok(files.includes(join(`round-${r}`, 'global_model.safetensors')), `round ${r}'s global model`);
      const { tensors } = await readSafetensors(join(dir, 'global_model.safetensors'));
      assert.deepEqual([...tensors.keys()], ['dense1.kernel', 'dense1.bias', 'dense2.kernel', 'dense2.bias']);
      const init = (await readSafetensors(join(example, 'initial_model.safetensors'))).tensors;
      for (const [k, t] of tensors) {
        assert.ok((t.data as Float32Array).every(Number.isFinite), `${k} is finite`);
        assert.notDeepEqual(t.data, init.get(k)!.data, `${k} was trained`);
      }

      // the same job with executor.params: file (issue 20): each site streams the task to a file, the
      // unchanged script gets mapped params and its state_dict goes back as a file
      const fileJob = join(tmp, 'pytorch-fedavg-file');
      cpSync(example, fileJob, { recursive: true, filter: (p) => !p.includes('__pycache__') && !p.endsWith('/mixed') });
      const yaml = readFileSync(join(fileJob, 'job.yaml'), 'utf8');
      writeFileSync(
        join(fileJob, 'job.yaml'),
        yaml.replace('rounds: 5', 'rounds: 2').replace(/^executor:\n/m, 'executor:\n  params: file\n'),
      );
      assert.match(readFileSync(join(fileJob, 'job.yaml'), 'utf8'), /params: file/);
      const fileId = /Submitted job (\S+)/.exec(run('admin', admin, 'submit', fileJob))?.[1];
      assert.ok(fileId);
      status = await waitForJobEnd<Status>(admin, fileId);
      assert.equal(status.state, 'FINISHED', JSON.stringify(status));
      assert.equal(status.result!.rounds.length, 2);
      for (const r of status.result!.rounds) assert.deepEqual(r.failures, {});
      assert.ok(status.result!.rounds[1]!.metrics.val_accuracy! > 0.5, JSON.stringify(status.result!.rounds[1]!.metrics));
      assert.deepEqual(Object.keys(status.result!.crossSite ?? {}).sort(), ['server', 'site-1', 'site-2', 'site-3']);
    } finally {
      assert.match(run('poc', 'stop', '-w', ws), /Stopped/);
    }
  },
);
