// An he job whose server is killed -9 mid-job and started again (server and two sites are real
// processes from kits provisioned with homomorphicEncryption): the job resumes from its encrypted
// checkpoint, the sites keep decrypting the tasks, and the final model decrypts to plain FedAvg of
// all rounds within 1e-3.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { SafetensorsFile } from '../../../src/core/safetensors.ts';
import { streamToDict } from '../../../src/core/tensor-stream.ts';
import { decryptStream, heContextFromFile } from '../../../src/filters/index.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { repo, until } from '../../helpers/federation.ts';
import {
  type LogEvent,
  ServerProcess,
  SiteProcesses,
  dumpFederation,
  federationKits,
  jobEndStatus,
  jobEvents,
} from '../../helpers/fault.ts';
import { expectedGlobal } from '../../fixtures/jobs/he/trainer.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-he-restart-'));
const servers: ServerProcess[] = [];
after(() => {
  for (const s of servers) s.killAll();
  rmSync(tmp, { recursive: true, force: true });
});

const ROUNDS = 4;

test(
  'he: a server killed -9 mid-job resumes from its encrypted checkpoint; the final model is plain FedAvg within 1e-3',
  { timeout: 300_000 },
  async () => {
    const k = await federationKits(join(tmp, 'kits'), 'he-restart', 2, { he: true });
    const port = loadKit(k.server!, 'server').config.listen.port;
    const workspace = join(tmp, 'server');
    const server = new ServerProcess(k.server!, workspace);
    servers.push(server);
    server.start();
    const out = server.out;
    const sites = new SiteProcesses(k);
    for (const s of ['site-1', 'site-2']) sites.start(s, join(tmp, s));
    const job = join(tmp, 'job');
    cpSync(join(repo, 'test/fixtures/jobs/he'), job, { recursive: true });
    const yaml = readFileSync(join(job, 'job.yaml'), 'utf8')
      .replace('rounds: 2', `rounds: ${ROUNDS}`)
      .replace('factory: createTrainer', 'factory: createTrainer\n    args: { sleepMs: 300 }');
    writeFileSync(join(job, 'job.yaml'), yaml);
    let id = '';
    const admin = (): AdminClient => new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
    try {
      await until('the server to listen', () => out.join('').includes('listening on port'), 90_000);
      await until('two sites', () => [...sites.output.values()].every((o) => o.join('').includes('connected to')), 90_000);
      const a1 = admin();
      id = await a1.submit(job);
      a1.close();
      const rounds = (): LogEvent[] => jobEvents(workspace, id).filter((e) => e.msg === 'round done');
      await until('round 1 done', () => rounds().length >= 2, 60_000);
      await server.kill();
      const lastDone = Math.max(...rounds().map((e) => e.round as number));
      assert.ok(lastDone < ROUNDS - 1, 'the job ended before the kill');

      server.start();
      await until(
        'the job resumed',
        () => jobEvents(workspace, id).some((e) => e.msg === 'job resumed from its last completed round'),
        90_000,
      );
      const a2 = admin();
      const st = await jobEndStatus(a2, id, 60_000);
      a2.close();
      assert.equal(st.state, 'FINISHED', st.detail ?? undefined);
      const file = await SafetensorsFile.open(join(workspace, 'jobs', id, 'workspace', 'server', 'global_model.safetensors'));
      try {
        const site = await heContextFromFile(join(k['site-1']!, 'startup', 'he_context.json'));
        const plain = await streamToDict(decryptStream(file.stream(), site));
        let worst = 0;
        for (const [name, want] of expectedGlobal(['site-1', 'site-2'], ROUNDS)) {
          const got = plain.get(name)!.data as Float32Array;
          for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
        }
        assert.ok(worst < 1e-3, `largest error ${worst}`);
      } finally {
        await file.close();
      }
    } catch (e) {
      dumpFederation(server, sites, workspace, id);
      throw e;
    } finally {
      await sites.stopAll();
      await server.stop();
    }
  },
);
