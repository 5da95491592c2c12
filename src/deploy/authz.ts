/**
 * Who may do what, after NVFlare's default authorization policy:
 *   project_admin  everything
 *   org_admin      view; abort/download jobs submitted by its organisation; operate its organisation's sites
 *   lead           view; submit; abort/download its own jobs; operate its organisation's sites
 *   member         view only
 * The caller's name, org and role come from its certificate (signed by the CA); each command's
 * policy comes from the admin command table.
 */
import type { AdminRole } from '../provision/project.ts';
import { ADMIN_ROLES } from '../provision/project.ts';
import { ADMIN_COMMAND_TABLE, type AdminCommand } from './admin-commands.ts';

export { ADMIN_COMMANDS, type AdminCommand } from './admin-commands.ts';

export interface AdminUser {
  name: string;
  org: string;
  role: AdminRole;
}

export function isRole(s: string): s is AdminRole {
  return (ADMIN_ROLES as readonly string[]).includes(s);
}

export type Target = { job: { submitter: string; submitterOrg: string } } | { site: { org: string } } | Record<string, never>;

/** null when allowed, otherwise the reason. */
export function authorize(u: AdminUser, cmd: AdminCommand, target: Target = {}): string | null {
  if (u.role === 'project_admin') return null;
  const deny = (why: string): string => `${u.name} (${u.role}, ${u.org}) may not ${cmd}: ${why}`;
  const policy = ADMIN_COMMAND_TABLE[cmd].policy;
  switch (policy) {
    case 'view':
      return null;
    case 'project-admin':
      return deny(cmd === 'audit' ? 'only a project_admin reads the audit log' : 'only a project_admin may');
    case 'submit':
      return u.role === 'lead' ? null : deny('only project_admin and lead submit jobs');
    case 'job-owner': {
      if (!('job' in target)) return deny('no job given');
      if (u.role === 'org_admin')
        return target.job.submitterOrg === u.org ? null : deny(`the job was submitted by organisation ${target.job.submitterOrg}`);
      if (u.role === 'lead') return target.job.submitter === u.name ? null : deny(`the job was submitted by ${target.job.submitter}`);
      return deny('members can only view');
    }
    case 'site-org': {
      if (!('site' in target)) return deny('no site given');
      if (u.role === 'org_admin' || u.role === 'lead')
        return target.site.org === u.org ? null : deny(`the site belongs to organisation ${target.site.org}`);
      return deny('members can only view');
    }
  }
}
