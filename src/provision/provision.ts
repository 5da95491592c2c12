/**
 * `flotilla provision`: one startup kit per participant of project.yml, like
 * NVFlare's provisioning. The CA key stays in <out>/<project>/state/ and is
 * reused by later runs (prod_01, prod_02, ...), so re-provisioning adds
 * participants to the same federation; it never goes into a kit.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type CertAuthority, createCA, issueCert } from './ca.ts';
import { type AdminConfig, type ClientConfig, CONFIG_FILES, type ServerConfig, signKit } from './kit.ts';
import type { Participant, Project } from './project.ts';
import { HE_CONTEXT_FILE, type HeKeyFile, generateHeKeys, readHeKeyFile } from '../filters/he-context.ts';

export interface ProvisionResult {
  projectDir: string;
  prodDir: string;
  /** participant name → participant folder (the kit) */
  kits: Record<string, string>;
}

export interface ProvisionOptions {
  outDir: string;
  /** overrides certificate validity (tests use it to make expired certificates) */
  notBefore?: Date;
  notAfter?: Date;
}

function loadOrCreateCA(stateDir: string, project: Project): Promise<CertAuthority> | CertAuthority {
  const certPath = join(stateDir, 'rootCA.pem');
  const keyPath = join(stateDir, 'rootCA.key');
  if (existsSync(certPath) && existsSync(keyPath))
    return { certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') };
  return createCA(project.name, Math.max(project.validityDays, 3650)).then((ca) => {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    writeFileSync(certPath, ca.certPem);
    writeFileSync(keyPath, ca.keyPem, { mode: 0o600 });
    return ca;
  });
}

/** The project's HE key set: made on the first provisioning with homomorphicEncryption, then reused (like the CA), so later kits join the same context. */
async function loadOrCreateHeKeys(stateDir: string): Promise<{ site: HeKeyFile; server: HeKeyFile }> {
  const path = join(stateDir, HE_CONTEXT_FILE);
  if (existsSync(path)) {
    const site = readHeKeyFile(path);
    const { secretKey: _, ...server } = site;
    return { site, server };
  }
  const keys = await generateHeKeys();
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify(keys.site, null, 2)}\n`, { mode: 0o600 });
  return keys;
}

function nextProdDir(projectDir: string): string {
  const used = existsSync(projectDir)
    ? readdirSync(projectDir)
        .map((d) => /^prod_(\d+)$/.exec(d)?.[1])
        .filter((x): x is string => x !== undefined)
        .map(Number)
    : [];
  const n = (used.length ? Math.max(...used) : 0) + 1;
  return join(projectDir, `prod_${String(n).padStart(2, '0')}`);
}

function startScript(kind: 'server' | 'client' | 'admin'): string {
  const cmd = kind === 'admin' ? 'admin "$KIT" "$@"' : `${kind} start "$KIT" "$@"`;
  return `#!/bin/sh\n# Starts this participant. Set FLOTILLA to the flotilla command if it is not on PATH.\nKIT="$(cd "$(dirname "$0")/.." && pwd)"\nexec \${FLOTILLA:-flotilla} ${cmd}\n`;
}

export async function provision(project: Project, opts: ProvisionOptions): Promise<ProvisionResult> {
  const projectDir = resolve(opts.outDir, project.name);
  const ca = await loadOrCreateCA(join(projectDir, 'state'), project);
  const prodDir = nextProdDir(projectDir);
  const server = project.participants.find((p) => p.type === 'server');
  if (!server || server.type !== 'server') throw new Error('project has no server');
  const notAfter = opts.notAfter ?? new Date(Date.now() + project.validityDays * 86_400_000);
  const kits: Record<string, string> = {};
  const he = project.homomorphicEncryption ? await loadOrCreateHeKeys(join(projectDir, 'state')) : null;
  for (const p of project.participants) {
    const root = join(prodDir, p.name);
    const startup = join(root, 'startup');
    mkdirSync(startup, { recursive: true });
    const cert = await issueCert(ca, {
      subject: { cn: p.name, org: p.org, ou: p.type === 'admin' ? p.role : p.type },
      ...(p.type === 'server' && { hosts: [...new Set([p.host, 'localhost', '127.0.0.1'])] }),
      ...(opts.notBefore && { notBefore: opts.notBefore }),
      notAfter,
    });
    writeFileSync(join(startup, 'rootCA.pem'), ca.certPem);
    writeFileSync(join(startup, `${p.name}.crt`), cert.certPem);
    writeFileSync(join(startup, `${p.name}.key`), cert.keyPem, { mode: 0o600 });
    writeFileSync(join(startup, CONFIG_FILES[p.type]), `${JSON.stringify(configFor(project, p, server), null, 2)}\n`);
    writeFileSync(join(startup, 'start.sh'), startScript(p.type));
    chmodSync(join(startup, 'start.sh'), 0o755);
    // sites get the secret key, the server only the public context; admins none
    if (he && p.type !== 'admin')
      writeFileSync(join(startup, HE_CONTEXT_FILE), `${JSON.stringify(p.type === 'client' ? he.site : he.server, null, 2)}\n`, {
        mode: 0o600,
      });
    signKit(startup, ca.keyPem);
    kits[p.name] = root;
  }
  return { projectDir, prodDir, kits };
}

function configFor(
  project: Project,
  p: Participant,
  server: Extract<Participant, { type: 'server' }>,
): ServerConfig | ClientConfig | AdminConfig {
  const endpoint = { host: server.host, port: server.port };
  switch (p.type) {
    case 'server':
      return {
        kind: 'server',
        project: project.name,
        name: p.name,
        org: p.org,
        listen: { host: p.bind ?? '0.0.0.0', port: p.port },
        dataPort: p.dataPort === undefined ? (p.port < 65535 ? p.port + 1 : null) : p.dataPort,
        heartbeatTimeoutSeconds: 30,
        maxJobBytes: p.maxJobBytes ?? 64 << 20,
      };
    case 'client':
      return {
        kind: 'client',
        project: project.name,
        name: p.name,
        org: p.org,
        server: endpoint,
        serverName: server.host,
        heartbeatSeconds: 5,
        maxJobBytes: server.maxJobBytes ?? 64 << 20,
        ...(p.python !== undefined && { python: p.python }),
        ...(p.privacy !== undefined && { privacy: p.privacy }),
      };
    case 'admin':
      return { kind: 'admin', project: project.name, name: p.name, org: p.org, role: p.role, server: endpoint, serverName: server.host };
  }
}
