// Real deployment on loopback: provisioned kits, a server and two client processes over
// mutual TLS, jobs submitted through the admin CLI, and the attacks the server must refuse.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { createCA, issueCert } from '../../../src/provision/ca.ts';
import { type ClientConfig, loadKit } from '../../../src/provision/kit.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { provision } from '../../../src/provision/provision.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { Channel } from '../../../src/streaming/index.ts';
import { GrpcClient } from '../../../src/transport/grpc/client.ts';
import { FEDERATION_CONNECT } from '../../../src/transport/grpc/wire.ts';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const tinyJob = join(repo, 'test/fixtures/jobs/tiny');
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-deploy-'));
const children: ChildProcess[] = [];
let kits: Record<string, string> = {};
let port = 0;
let admin: AdminClient;
let site2: Proc;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function cli(args: string[]): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let text = '';
  child.stdout.on('data', (b: Buffer) => (text += b.toString()));
  child.stderr.on('data', (b: Buffer) => (text += b.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => text, exited };
}

async function waitFor(p: Proc, re: RegExp, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!re.test(p.out())) {
    if (Date.now() > deadline || p.child.exitCode !== null) throw new Error(`waiting for ${re}: got\n${p.out()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitForState(job: string, states: string[], ms = 60_000): Promise<{ state: string; detail: string | null }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = await admin.call('status', { job });
    if (states.includes(s.state)) return s;
    if (Date.now() > deadline) throw new Error(`job ${job} still ${s.state}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

before(async () => {
  port = await freePort();
  const project = parseProject({
    name: 'e2e',
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'client', name: 'site-2', org: 'b' },
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
      { type: 'admin', name: 'member@a.org', org: 'a', role: 'member' },
      { type: 'admin', name: 'lead@b.org', org: 'b', role: 'lead' },
    ],
  });
  kits = (await provision(project, { outDir: tmp })).kits;
  const server = cli(['server', 'start', kits.server!]);
  await waitFor(server, /listening on port/);
  const c1 = cli(['client', 'start', kits['site-1']!]);
  const c2 = cli(['client', 'start', kits['site-2']!]);
  await Promise.all([waitFor(c1, /connected/), waitFor(c2, /connected/)]);
  site2 = c2;
  admin = new AdminClient(kits['boss@hub.org']!);
});

after(() => {
  admin?.close();
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

/** Waits for the server process's log (its kit's workspace/log.jsonl) to have a line matching re. */
async function serverLogged(re: RegExp, ms = 5_000): Promise<string> {
  const file = join(kits.server!, 'workspace', 'log.jsonl');
  const deadline = Date.now() + ms;
  for (;;) {
    const line = readFileSync(file, 'utf8')
      .split('\n')
      .find((l) => re.test(l));
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`server log has no line matching ${re}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function serverStillServes(): Promise<void> {
  const sites = await admin.call('sites');
  assert.deepEqual(
    sites.map((s) => s.site),
    ['site-1', 'site-2'],
  );
}

test('a job submitted with the admin CLI runs on two client processes and matches the simulator', async () => {
  const submit = cli(['admin', kits['boss@hub.org']!, 'submit', tinyJob, '--json']);
  assert.equal(await submit.exited, 0, submit.out());
  const { jobId } = JSON.parse(submit.out()) as { jobId: string };
  assert.match(jobId, /^tiny-[0-9a-f]{8}$/);
  const st = await waitForState(jobId, ['FINISHED', 'FAILED', 'ABORTED']);
  assert.equal(st.state, 'FINISHED', st.detail ?? '');

  const dl = cli(['admin', kits['boss@hub.org']!, 'download', jobId, '-o', join(tmp, 'downloads')]);
  assert.equal(await dl.exited, 0, dl.out());
  const deployed = await readSafetensors(join(tmp, 'downloads', jobId, 'global_model.safetensors'));

  const sim = await simulate({ jobDir: tinyJob, clients: 2, threads: 0, workspace: join(tmp, 'sim') });
  const a = deployed.tensors.get('w')!;
  const b = sim.model!.get('w')!;
  assert.deepEqual(a.shape, b.shape);
  assert.deepEqual(Array.from(a.data as Float32Array), Array.from(b.data as Float32Array));
  const summary = JSON.parse(readFileSync(join(tmp, 'downloads', jobId, 'summary.json'), 'utf8')) as { rounds: unknown[]; sites: string[] };
  assert.equal(summary.rounds.length, 3);
  assert.deepEqual(summary.sites, ['site-1', 'site-2']);
  const events = (await admin.call('status', { job: jobId })).events.map((e) => e.state);
  assert.deepEqual(events, ['SUBMITTED', 'RUNNING', 'FINISHED']);
});

function clientWith(certPem: string, keyPem: string, caPem: string): GrpcClient {
  return new GrpcClient({ host: 'localhost', port, serverName: 'localhost', caPem, certPem, keyPem });
}

/** Opens a session and returns the first message from the server, or the reason the call ended. */
async function trySession(c: GrpcClient, site: string): Promise<Record<string, unknown> | string> {
  const link = c.connect({ 'x-flotilla-purpose': 'session' });
  const ch = new Channel(link);
  await ch.send({ type: 'hello', site, protocol: 1 }).catch(() => undefined);
  for await (const env of ch.messages()) {
    ch.close('done');
    return env.msg;
  }
  return link.closed;
}

test('a client certificate from another CA is refused at the TLS handshake, and the server logs why', async () => {
  const rogue = await createCA('rogue', 10);
  const cert = await issueCert(rogue, { subject: { cn: 'site-1', org: 'a', ou: 'client' }, notAfter: new Date(Date.now() + 86_400_000) });
  const real = loadKit(kits['site-1']!, 'client');
  const c = clientWith(cert.certPem, cert.keyPem, real.caPem);
  const r = await trySession(c, 'site-1');
  c.close();
  assert.equal(typeof r, 'string', `expected refusal, got ${JSON.stringify(r)}`);
  assert.match(r as string, /No connection established|Failed to connect/);
  const line = JSON.parse(await serverLogged(/TLS handshake refused: unable to verify the first certificate/)) as {
    remote: string;
    level: number;
  };
  assert.equal(line.remote, '127.0.0.1');
  assert.equal(line.level, 40, 'logged as a warning');
  await serverStillServes();
});

test('a site certificate claiming another site name is refused', async () => {
  const k = loadKit(kits['site-1']!, 'client');
  const c = clientWith(k.certPem, k.keyPem, k.caPem);
  const r = await trySession(c, 'site-2');
  c.close();
  assert.equal(typeof r, 'object');
  assert.equal((r as { type: string }).type, 'refused');
  assert.match(String((r as { reason: string }).reason), /site-2 does not match the certificate's common name site-1/);
  await serverStillServes();
});

test('an expired certificate signed by the project CA is refused: its kit does not start, the handshake fails and the server logs why', async () => {
  // the kit: provisioned by the same CA with a validity that is over; `client start` names the file and the fix
  const project = parseProject({
    name: 'e2e',
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port },
      { type: 'client', name: 'site-3', org: 'a' },
    ],
  });
  const old = await provision(project, {
    outDir: tmp,
    notBefore: new Date('2019-01-01T00:00:00Z'),
    notAfter: new Date('2020-01-01T00:00:00Z'),
  });
  const p = cli(['client', 'start', old.kits['site-3']!]);
  assert.equal(await p.exited, 1);
  assert.match(
    p.out(),
    /site-3\.crt expired on 2020-01-01T00:00:00Z: re-provision this site's startup kit \(flotilla provision project\.yml\)/,
  );
  // the same certificate used directly, past the kit check: the server refuses the handshake
  const k = join(old.kits['site-3']!, 'startup');
  const c = clientWith(
    readFileSync(join(k, 'site-3.crt'), 'utf8'),
    readFileSync(join(k, 'site-3.key'), 'utf8'),
    readFileSync(join(k, 'rootCA.pem'), 'utf8'),
  );
  const r = await trySession(c, 'site-3');
  c.close();
  assert.equal(typeof r, 'string', `expected refusal, got ${JSON.stringify(r)}`);
  assert.match(r as string, /No connection established|Failed to connect/);
  await serverLogged(/TLS handshake refused: certificate has expired \(CERT_HAS_EXPIRED\)/);
  await serverStillServes();
});

test('a tampered startup kit refuses to start and names the file', async () => {
  const copy = join(tmp, 'tampered-site-1');
  cpSync(kits['site-1']!, copy, { recursive: true });
  const cfgPath = join(copy, 'startup', 'fed_client.json');
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as ClientConfig;
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, server: { host: 'evil.example', port: 1 } }));
  const p = cli(['client', 'start', copy]);
  assert.equal(await p.exited, 1);
  assert.match(p.out(), /tampered with: fed_client\.json does not match its signature/);
  await serverStillServes();
});

test('admin commands beyond the role are refused and audited', async () => {
  const p = cli(['admin', kits['member@a.org']!, 'submit', tinyJob]);
  assert.equal(await p.exited, 1);
  assert.match(p.out(), /permission denied: member@a\.org \(member, a\) may not submit/);
  // a lead may not abort a job it did not submit
  const lead = new AdminClient(kits['lead@b.org']!);
  const jobs = await lead.call('list');
  assert.ok(jobs.length >= 1, 'a lead can view jobs');
  await assert.rejects(lead.call('abort', { job: jobs[0]!.id }), /permission denied: .*submitted by boss@hub\.org/);
  await assert.rejects(lead.call('audit'), /permission denied/);
  lead.close();
  // a site certificate cannot be used as an admin
  const site = loadKit(kits['site-1']!, 'client');
  const asSite = new GrpcClient({
    host: 'localhost',
    port,
    serverName: 'localhost',
    caPem: site.caPem,
    certPem: site.certPem,
    keyPem: site.keyPem,
  });
  const r = await asSite.command({ command: 'list', args_json: '{}', blob: new Uint8Array(0) });
  asSite.close();
  assert.equal(r.ok, false);
  assert.match(r.json, /not an admin/);
  const audit = await admin.call('audit');
  assert.ok(audit.some((e) => e.user === 'member@a.org' && e.command === 'submit' && !e.allowed));
  assert.ok(audit.some((e) => e.user === 'lead@b.org' && e.command === 'abort' && !e.allowed));
  assert.ok(audit.some((e) => e.user === 'boss@hub.org' && e.command === 'submit' && e.allowed));
});

test('malformed job folders are refused with the field or path named', async () => {
  const bundle = (files: { path: string; text: string }[]): Uint8Array =>
    Buffer.from(JSON.stringify({ files: files.map((f) => ({ path: f.path, base64: Buffer.from(f.text).toString('base64') })) }));
  await assert.rejects(
    admin.call('submit', {}, bundle([{ path: '../escape.ts', text: 'x' }])),
    /files\.0\.path: must be a relative path inside the job folder/,
  );
  await assert.rejects(admin.call('submit', {}, bundle([{ path: 'job.yaml', text: 'name: bad\nminClients: two\n' }])), /minClients/);
  await assert.rejects(admin.call('submit', {}, bundle([{ path: 'readme.md', text: 'no config' }])), /has no config file/);
  await assert.rejects(admin.call('submit', {}, Buffer.from('not json')), /not valid JSON/);
  await serverStillServes();
});

test('malformed gRPC messages end only the offending call', async () => {
  const k = loadKit(kits['site-2']!, 'client');
  const c = clientWith(k.certPem, k.keyPem, k.caPem);
  // bytes that are not a protobuf Frame
  const md = new grpc.Metadata();
  md.set('x-flotilla-purpose', 'session');
  const raw = c.rawClient.makeBidiStreamRequest<Buffer, Buffer>(
    FEDERATION_CONNECT,
    (b) => b,
    (b) => b,
    md,
  );
  const ended = new Promise<string>((r) => raw.on('error', (e: grpc.ServiceError) => r(`${e.code}`)).on('end', () => r('end')));
  raw.write(Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]));
  assert.ok(await ended);
  raw.cancel();
  // a Frame message with no field set
  const md2 = new grpc.Metadata();
  md2.set('x-flotilla-purpose', 'session');
  const empty = c.rawClient.makeBidiStreamRequest<Buffer, Buffer>(
    FEDERATION_CONNECT,
    (b) => b,
    (b) => b,
    md2,
  );
  const status = new Promise<grpc.ServiceError>((r) => empty.on('error', r));
  empty.on('data', () => undefined);
  empty.write(Buffer.alloc(0));
  const e = await status;
  assert.equal(e.code, grpc.status.INVALID_ARGUMENT);
  assert.match(e.details, /empty frame/);
  // garbage control JSON on a session
  const r = await (async () => {
    const link = c.connect({ 'x-flotilla-purpose': 'session' });
    await link.send({ type: 'control', json: '{"msg":{"type":"hello","site":42}}' });
    const ch = new Channel(link);
    for await (const env of ch.messages()) return env.msg;
    return null;
  })();
  assert.equal((r as { type: string } | null)?.type, 'refused');
  assert.match(String((r as { reason: string }).reason), /malformed session message/);
  c.close();
  await serverStillServes();
});

test('abort stops a queued job and the state is kept in the store', async () => {
  // a job needing more sites than are connected stays queued
  const dir = join(tmp, 'needs-three');
  cpSync(tinyJob, dir, { recursive: true });
  writeFileSync(join(dir, 'job.yaml'), readFileSync(join(dir, 'job.yaml'), 'utf8').replace('minClients: 2', 'minClients: 3'));
  const id = await admin.submit(dir);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await admin.call('status', { job: id })).state, 'SUBMITTED');
  await admin.call('abort', { job: id });
  const s = await waitForState(id, ['ABORTED']);
  assert.match(s.detail ?? '', /aborted by boss@hub\.org/);
  await assert.rejects(admin.call('abort', { job: id }), /already ABORTED/);
});

test('the live site list drops a client whose process dies', async () => {
  site2.child.kill('SIGKILL');
  await site2.exited;
  const deadline = Date.now() + 20_000;
  let sites: string[] = [];
  while (Date.now() < deadline) {
    sites = (await admin.call('sites')).map((s) => s.site);
    if (sites.length === 1) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(sites, ['site-1']);
});
