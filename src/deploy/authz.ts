/**
 * Who may do what, after NVFlare's default authorization policy:
 *   project_admin  everything
 *   org_admin      view; abort/download jobs submitted by its organisation; operate its organisation's sites
 *   lead           view; submit; abort/download its own jobs; operate its organisation's sites
 *   member         view only
 * The caller's name, org and role come from its certificate (signed by the CA).
 */
import type { AdminRole } from '../provision/project.ts';
import { ADMIN_ROLES } from '../provision/project.ts';

export interface AdminUser {
  name: string;
  org: string;
  role: AdminRole;
}

export const ADMIN_COMMANDS = ['submit', 'list', 'status', 'abort', 'download', 'sites', 'requeue', 'shutdown-site', 'audit'] as const;
export type AdminCommand = (typeof ADMIN_COMMANDS)[number];

export function isRole(s: string): s is AdminRole {
  return (ADMIN_ROLES as readonly string[]).includes(s);
}

export type Target = { job: { submitter: string; submitterOrg: string } } | { site: { org: string } } | Record<string, never>;

/** null when allowed, otherwise the reason. */
export function authorize(u: AdminUser, cmd: AdminCommand, target: Target = {}): string | null {
  if (u.role === 'project_admin') return null;
  const deny = (why: string): string => `${u.name} (${u.role}, ${u.org}) may not ${cmd}: ${why}`;
  switch (cmd) {
    case 'list':
    case 'status':
    case 'sites':
      return null;
    case 'audit':
      return deny('only a project_admin reads the audit log');
    case 'submit':
      return u.role === 'lead' ? null : deny('only project_admin and lead submit jobs');
    case 'abort':
    case 'download':
    case 'requeue': {
      if (!('job' in target)) return deny('no job given');
      if (u.role === 'org_admin') return target.job.submitterOrg === u.org ? null : deny(`the job was submitted by organisation ${target.job.submitterOrg}`);
      if (u.role === 'lead') return target.job.submitter === u.name ? null : deny(`the job was submitted by ${target.job.submitter}`);
      return deny('members can only view');
    }
    case 'shutdown-site': {
      if (!('site' in target)) return deny('no site given');
      if (u.role === 'org_admin' || u.role === 'lead') return target.site.org === u.org ? null : deny(`the site belongs to organisation ${target.site.org}`);
      return deny('members can only view');
    }
  }
}
