/**
 * project.yml: who takes part in a federation. Validated strictly; errors name
 * the file and the field (e.g. `participants.2.role`).
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { zodIssueLines } from '../util/zod-error.ts';
import { PrivacyPolicySchema } from '../filters/policy.ts';

const Name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be 1–64 letters, digits, "_", "." or "-"');
const Org = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_. -]{0,63}$/, 'must be 1–64 letters, digits, spaces, "_", "." or "-"');
const Email = z.string().regex(/^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}$/, 'must be an email address');

export const ADMIN_ROLES = ['project_admin', 'org_admin', 'lead', 'member'] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];

export const ServerParticipant = z.strictObject({
  type: z.literal('server'),
  name: Name,
  org: Org,
  /** the name clients dial; also put into the certificate's subjectAltName */
  host: z.string().min(1).max(253),
  port: z.number().int().min(1).max(65535),
  /** the address the server listens on (gRPC and the data plane): default every interface, 0.0.0.0; 127.0.0.1 keeps it on this machine */
  bind: z
    .ipv4({ error: 'must be an IPv4 address to listen on, e.g. 0.0.0.0 (every interface) or 127.0.0.1 (this machine only)' })
    .optional(),
  /**
   * port of the data plane (model payloads over mutual TLS without gRPC's framing, 1.6–1.9× the
   * throughput); default port + 1, null to send payloads over the gRPC port
   */
  dataPort: z.number().int().min(1).max(65535).nullable().optional(),
  /** largest job folder the server (and each site) accepts, in bytes: default 64 MiB */
  maxJobBytes: z
    .number()
    .int()
    .min(1 << 20, 'must be at least 1048576 bytes (1 MiB)')
    .optional(),
});
export const ClientParticipant = z.strictObject({
  type: z.literal('client'),
  name: Name,
  org: Org,
  /** the site's Python interpreter, `{python}` in its jobs' script executors (FLOTILLA_PYTHON overrides it) */
  python: z.string().min(1).optional(),
  /** the site's privacy policy, written into its kit: filters applied to every result it sends (docs/filters.md) */
  privacy: PrivacyPolicySchema.optional(),
});
export const AdminParticipant = z.strictObject({ type: z.literal('admin'), name: Email, org: Org, role: z.enum(ADMIN_ROLES) });

export const ProjectSchema = z
  .strictObject({
    name: Name,
    description: z.string().max(1000).optional(),
    /** certificate lifetime in days */
    validityDays: z.number().int().min(1).max(3650).default(360),
    /**
     * CKKS keys for jobs with the he filter (docs/filters.md): every site's kit gets the context with
     * the secret key, the server's the public context only. Made once, kept in state/ with the CA.
     */
    homomorphicEncryption: z.boolean().default(false),
    participants: z.array(z.discriminatedUnion('type', [ServerParticipant, ClientParticipant, AdminParticipant])).min(1),
  })
  .superRefine((p, ctx) => {
    const servers = p.participants.filter((x) => x.type === 'server');
    if (servers.length !== 1)
      ctx.addIssue({
        code: 'custom',
        path: ['participants'],
        message: `exactly one participant of type server is required, found ${servers.length}`,
      });
    p.participants.forEach((x, i) => {
      if (x.type === 'server' && x.dataPort === x.port)
        ctx.addIssue({
          code: 'custom',
          path: ['participants', i, 'dataPort'],
          message: `the data plane needs a port of its own, not the gRPC port ${x.port}`,
        });
    });
    const seen = new Map<string, number>();
    p.participants.forEach((x, i) => {
      const prev = seen.get(x.name);
      if (prev !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['participants', i, 'name'],
          message: `duplicate participant name "${x.name}" (also participants.${prev})`,
        });
      seen.set(x.name, i);
    });
  });
export type Project = z.infer<typeof ProjectSchema>;
export type Participant = Project['participants'][number];

export class ProjectError extends Error {
  override readonly name = 'ProjectError';
}

export function parseProject(raw: unknown, file = '<project>'): Project {
  const r = ProjectSchema.safeParse(raw);
  if (!r.success) {
    throw new ProjectError(`${file}: invalid project\n${zodIssueLines(r.error)}`);
  }
  return r.data;
}

export function readProject(file: string): Project {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ProjectError(
      `${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : `not valid YAML: ${(e as Error).message}`}`,
    );
  }
  return parseProject(raw, file);
}
