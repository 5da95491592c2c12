// Provisioning, kit signatures, job bundles, roles and the job store, without processes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { authorize } from '../../../src/deploy/authz.ts';
import { createCA, describeCert, issueCert } from '../../../src/provision/ca.ts';
import { KitError, loadKit, signKit } from '../../../src/provision/kit.ts';
import { ProjectError, parseProject } from '../../../src/provision/project.ts';
import { provision } from '../../../src/provision/provision.ts';
import { BundleError, packJob, unpackJob } from '../../../src/deploy/job-bundle.ts';
import { JobStore } from '../../../src/deploy/job-store.ts';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-prov-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const project = {
  name: 'proj',
  participants: [
    { type: 'server', name: 'server', org: 'hub', host: 'fl.example.org', port: 8002 },
    { type: 'client', name: 'site-1', org: 'a' },
    { type: 'admin', name: 'ann@a.org', org: 'a', role: 'org_admin' },
  ],
};

test('project.yml errors name the field', () => {
  const bad = structuredClone(project) as { participants: Record<string, unknown>[] };
  bad.participants[2]!.role = 'king';
  assert.throws(
    () => parseProject(bad, 'project.yml'),
    (e: Error) => e instanceof ProjectError && /project\.yml: invalid project/.test(e.message) && /participants\.2\.role/.test(e.message),
  );
  assert.throws(() => parseProject({ ...project, participants: project.participants.slice(1) }), /exactly one participant of type server/);
  assert.throws(
    () => parseProject({ ...project, participants: [...project.participants, { type: 'client', name: 'site-1', org: 'b' }] }),
    /participants\.3\.name: duplicate participant name "site-1"/,
  );
  assert.throws(() => parseProject({ ...project, colour: 'red' }), /unknown key\(s\) "colour"/);
  assert.throws(
    () => parseProject({ ...project, participants: [{ type: 'server', name: 'server', org: 'hub', host: 'h', port: 70000 }] }),
    /participants\.0\.port/,
  );
  assert.throws(
    () =>
      parseProject({ ...project, participants: [{ type: 'server', name: 'server', org: 'hub', host: 'h', port: 8002, dataPort: 8002 }] }),
    /participants\.0\.dataPort: the data plane needs a port of its own/,
  );
});

test('provisioning writes signed kits with identities in the certificates and keeps the CA key out of them', async () => {
  const r = await provision(parseProject(project), { outDir: tmp });
  assert.equal(r.prodDir, join(tmp, 'proj', 'prod_01'));
  const server = loadKit(r.kits.server!, 'server');
  const site = loadKit(join(r.kits['site-1']!, 'startup'), 'client');
  const adm = loadKit(r.kits['ann@a.org']!, 'admin');
  assert.equal(site.config.server.host, 'fl.example.org');
  assert.equal(server.config.dataPort, 8003, 'the data plane defaults to the port after the gRPC port');
  assert.equal(server.config.listen.host, '0.0.0.0', 'without bind, the server listens on every interface');
  assert.equal(adm.config.role, 'org_admin');
  assert.match(describeCert(server.certPem).subject, /CN=server.*OU=server/);
  assert.match(describeCert(site.certPem).subject, /CN=site-1, O=a, OU=client/);
  assert.match(describeCert(adm.certPem).subject, /CN=ann@a\.org, O=a, OU=org_admin/);
  const caKey = readFileSync(join(tmp, 'proj', 'state', 'rootCA.key'), 'utf8');
  const walk = (d: string): string[] =>
    readdirSync(d).flatMap((f) => (statSync(join(d, f)).isDirectory() ? walk(join(d, f)) : [join(d, f)]));
  for (const f of walk(r.prodDir)) assert.ok(!readFileSync(f, 'utf8').includes(caKey.trim()), `${f} holds the CA key`);
  // a second run reuses the CA
  const r2 = await provision(parseProject(project), { outDir: tmp });
  assert.equal(r2.prodDir, join(tmp, 'proj', 'prod_02'));
  assert.equal(loadKit(r2.kits['site-1']!, 'client').caPem, site.caPem);
});

test('a tampered kit is refused, naming the file', async () => {
  const kit = join(tmp, 'proj', 'prod_01', 'site-1', 'startup');
  const cfg = join(kit, 'fed_client.json');
  const original = readFileSync(cfg);
  appendFileSync(cfg, ' ');
  assert.throws(
    () => loadKit(kit, 'client'),
    (e: Error) => e instanceof KitError && /fed_client\.json does not match its signature/.test(e.message),
  );
  writeFileSync(cfg, original);
  loadKit(kit, 'client');
  writeFileSync(join(kit, 'extra.pem'), 'x');
  assert.throws(() => loadKit(kit, 'client'), /extra\.pem is not part of the signed kit/);
  unlinkSync(join(kit, 'extra.pem'));
  const key = readFileSync(join(kit, 'site-1.key'));
  unlinkSync(join(kit, 'site-1.key'));
  assert.throws(() => loadKit(kit, 'client'), /signed file site-1\.key is missing/);
  writeFileSync(join(kit, 'site-1.key'), key);
  assert.throws(() => loadKit(kit, 'server'), /not a server kit: fed_server\.json is missing/);
});

test('a kit whose certificate expired, is not yet valid or was not issued by its rootCA.pem refuses to load, saying what to do', async () => {
  const day = 86_400_000;
  const expired = await provision(parseProject(project), {
    outDir: join(tmp, 'expired'),
    notBefore: new Date('2019-01-01T00:00:00Z'),
    notAfter: new Date('2020-01-01T00:00:00Z'),
  });
  const refused = (re: RegExp) => (e: Error) => e instanceof KitError && re.test(e.message);
  assert.throws(
    () => loadKit(expired.kits['site-1']!, 'client'),
    refused(/^site-1\.crt expired on 2020-01-01T00:00:00Z: re-provision this site's startup kit \(flotilla provision project\.yml\)$/),
  );
  assert.throws(
    () => loadKit(expired.kits.server!, 'server'),
    refused(/^server\.crt expired on 2020-01-01T00:00:00Z: re-provision the server's startup kit/),
  );
  assert.throws(() => loadKit(expired.kits['ann@a.org']!, 'admin'), refused(/^ann@a\.org\.crt expired on .*this admin's startup kit/));
  const early = await provision(parseProject(project), {
    outDir: join(tmp, 'early'),
    notBefore: new Date(Date.now() + 10 * day),
    notAfter: new Date(Date.now() + 20 * day),
  });
  assert.throws(
    () => loadKit(early.kits['site-1']!, 'client'),
    refused(/^site-1\.crt is not valid until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: check this machine's clock/),
  );

  // a correctly signed kit whose certificate comes from another CA (files mixed from two projects)
  const caKey = readFileSync(join(tmp, 'proj', 'state', 'rootCA.key'), 'utf8');
  const mixed = join(tmp, 'mixed-site-1');
  cpSync(join(tmp, 'proj', 'prod_01', 'site-1'), mixed, { recursive: true });
  const startup = join(mixed, 'startup');
  const rogue = await issueCert(await createCA('rogue', 10), {
    subject: { cn: 'site-1', org: 'a', ou: 'client' },
    notAfter: new Date(Date.now() + day),
  });
  const ownKey = readFileSync(join(startup, 'site-1.key'));
  writeFileSync(join(startup, 'site-1.crt'), rogue.certPem);
  writeFileSync(join(startup, 'site-1.key'), rogue.keyPem);
  signKit(startup, caKey);
  assert.throws(
    () => loadKit(mixed, 'client'),
    refused(
      /^site-1\.crt was not issued by this kit's rootCA\.pem \(certificate issuer: CN=rogue root CA, O=rogue; kit CA: CN=proj root CA, O=proj\): .*re-provision this site's startup kit/,
    ),
  );
  // the right certificate with another key
  writeFileSync(join(startup, 'site-1.crt'), readFileSync(join(tmp, 'proj', 'prod_01', 'site-1', 'startup', 'site-1.crt')));
  writeFileSync(join(startup, 'site-1.key'), rogue.keyPem);
  signKit(startup, caKey);
  assert.throws(() => loadKit(mixed, 'client'), refused(/^site-1\.key does not belong to site-1\.crt/));
  writeFileSync(join(startup, 'site-1.key'), ownKey);
  signKit(startup, caKey);
  loadKit(mixed, 'client');
});

test('job bundles round-trip and refuse unsafe paths, oversize folders and bad configs', () => {
  const bytes = packJob(join(repo, 'test/fixtures/jobs/tiny'));
  const dest = join(tmp, 'unpacked', 'app');
  const cfg = unpackJob(bytes, dest);
  assert.equal(cfg.name, 'tiny');
  assert.equal(readFileSync(join(dest, 'trainer.ts'), 'utf8'), readFileSync(join(repo, 'test/fixtures/jobs/tiny/trainer.ts'), 'utf8'));
  const mk = (files: { path: string; text: string }[]): Uint8Array =>
    Buffer.from(JSON.stringify({ files: files.map((f) => ({ path: f.path, base64: Buffer.from(f.text).toString('base64') })) }));
  assert.throws(() => unpackJob(mk([{ path: 'a/../../x', text: '' }]), join(tmp, 'u2')), BundleError);
  assert.throws(() => unpackJob(mk([{ path: '/etc/passwd', text: '' }]), join(tmp, 'u2')), /files\.0\.path/);
  assert.throws(() => unpackJob(mk([{ path: 'job.yaml', text: 'x'.repeat(2000) }]), join(tmp, 'u2'), 1000), /exceeds the limit/);
  assert.throws(
    () => unpackJob(mk([{ path: 'job.yaml', text: 'name: t\nminClients: 0\n' }]), join(tmp, 'u2')),
    /<job folder>\/job\.yaml: invalid job config[\s\S]*minClients/,
  );
  assert.ok(!existsSync(join(tmp, 'u2')), 'a refused bundle leaves nothing behind');
});

test('job bundles refuse symbolic links (naming the link) and special files; --follow-links follows links inside the folder only', () => {
  const job = join(tmp, 'linky');
  cpSync(join(repo, 'test/fixtures/jobs/tiny'), job, { recursive: true });
  const secret = join(tmp, 'id_rsa');
  writeFileSync(secret, 'PRIVATE KEY');
  symlinkSync(secret, join(job, 'notes.txt'));
  assert.throws(
    () => packJob(job),
    (e: Error) =>
      e instanceof BundleError &&
      /notes\.txt is a symbolic link: links are not submitted/.test(e.message) &&
      /--follow-links/.test(e.message),
  );
  assert.throws(() => packJob(job, { followLinks: true }), /notes\.txt is a symbolic link to .*id_rsa, outside the job folder/);
  rmSync(join(job, 'notes.txt'));
  symlinkSync('trainer.ts', join(job, 'trainer-link.ts'));
  assert.throws(() => packJob(job), /trainer-link\.ts is a symbolic link/);
  const followed = JSON.parse(Buffer.from(packJob(job, { followLinks: true })).toString('utf8')) as {
    files: { path: string; base64: string }[];
  };
  const link = followed.files.find((f) => f.path === 'trainer-link.ts');
  assert.equal(
    Buffer.from(link!.base64, 'base64').toString('utf8'),
    readFileSync(join(job, 'trainer.ts'), 'utf8'),
    "a link inside the folder travels as its target's bytes",
  );
  rmSync(join(job, 'trainer-link.ts'));
  execFileSync('mkfifo', [join(job, 'pipe')]);
  assert.throws(() => packJob(job), /pipe is a named pipe: only regular files and folders are submitted/);
  rmSync(join(job, 'pipe'));
  // the server side: the wire format has no entry kind but a regular file; anything else is refused
  const wire = (files: unknown[]): Uint8Array => Buffer.from(JSON.stringify({ files }));
  assert.throws(
    () => unpackJob(wire([{ path: 'notes.txt', base64: '', symlink: '/root/.ssh/id_rsa' }]), join(tmp, 'u3')),
    /malformed job bundle: .*symlink/,
  );
  assert.throws(
    () =>
      unpackJob(
        wire([
          { path: 'a', base64: '' },
          { path: 'a/b', base64: '' },
        ]),
        join(tmp, 'u3'),
      ),
    /malformed job bundle: a is both a file and a folder/,
  );
  assert.ok(!existsSync(join(tmp, 'u3')));
});

test('roles follow the NVFlare-like policy', () => {
  const job = { job: { submitter: 'lee@b.org', submitterOrg: 'b' } };
  const u = (role: 'project_admin' | 'org_admin' | 'lead' | 'member', org = 'b', name = 'x@b.org') => ({ name, org, role });
  assert.equal(authorize(u('project_admin', 'z'), 'abort', job), null);
  assert.match(authorize(u('member'), 'submit') ?? '', /may not submit/);
  assert.equal(authorize(u('member'), 'list'), null);
  assert.equal(authorize(u('lead'), 'submit'), null);
  assert.match(authorize(u('org_admin'), 'submit') ?? '', /only project_admin and lead/);
  assert.equal(authorize(u('org_admin', 'b'), 'abort', job), null);
  assert.match(authorize(u('org_admin', 'c'), 'download', job) ?? '', /organisation b/);
  assert.equal(authorize(u('lead', 'b', 'lee@b.org'), 'abort', job), null);
  assert.match(authorize(u('lead', 'b', 'other@b.org'), 'abort', job) ?? '', /submitted by lee@b\.org/);
  assert.equal(authorize(u('org_admin', 'b'), 'shutdown-site', { site: { org: 'b' } }), null);
  assert.match(authorize(u('org_admin', 'b'), 'shutdown-site', { site: { org: 'a' } }) ?? '', /belongs to organisation a/);
});

test('a job that was running when the server stopped is marked ABORTED_BY_RESTART, never lost', () => {
  const path = join(tmp, 'store', 'jobs.sqlite');
  const s1 = new JobStore(path);
  s1.create({ id: 'j1', name: 'tiny', submitter: 'a', submitterOrg: 'o' });
  s1.create({ id: 'j2', name: 'tiny', submitter: 'a', submitterOrg: 'o' });
  s1.transition('j1', 'RUNNING', 'deployed', { sites: ['site-1'] });
  s1.close(); // the process dies here
  const s2 = new JobStore(path);
  assert.deepEqual(s2.recoverAfterRestart(), ['j1']);
  assert.equal(s2.get('j1')!.state, 'ABORTED_BY_RESTART');
  assert.deepEqual(s2.get('j1')!.sites, ['site-1']);
  assert.deepEqual(
    s2.events('j1').map((e) => e.state),
    ['SUBMITTED', 'RUNNING', 'ABORTED_BY_RESTART'],
  );
  assert.deepEqual(
    s2.queued().map((j) => j.id),
    ['j2'],
    'queued jobs stay queued',
  );
  s2.close();
});
