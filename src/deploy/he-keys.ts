/**
 * The HE contexts of a deployment's processes, from their startup kits (he_context.json, written
 * by provisioning with project.yml `homomorphicEncryption: true`): a site's holds the secret key,
 * the server's must not.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { HE_CONTEXT_FILE, type HeContext, heContextFromFile } from '../filters/he-context.ts';
import { type FilterSpec, heFilterIndex } from '../filters/spec.ts';

function kitFile(startup: string, filters: readonly FilterSpec[], who: string): string | null {
  const he = heFilterIndex(filters);
  if (he < 0) return null;
  const file = join(startup, HE_CONTEXT_FILE);
  if (!existsSync(file))
    throw new Error(
      `the job's filters.${he} encrypts with he, but ${who} startup kit has no ${HE_CONTEXT_FILE}: provision the project with homomorphicEncryption: true (poc prepare --he)`,
    );
  return file;
}

/** A site's context (with the secret key) for a job with the he filter; undefined for other jobs. */
export async function siteHeContext(startup: string, filters: readonly FilterSpec[]): Promise<HeContext | undefined> {
  const file = kitFile(startup, filters, "this site's");
  if (!file) return undefined;
  const ctx = await heContextFromFile(file);
  if (!ctx.canDecrypt) throw new Error(`${file} has no secret key: it is a server's context, not a site's; re-provision this site's kit`);
  return ctx;
}

/** The server's context (no secret key: it only sums ciphertexts) for a job with the he filter. */
export async function serverHeContext(startup: string, filters: readonly FilterSpec[]): Promise<HeContext | undefined> {
  const file = kitFile(startup, filters, "the server's");
  if (!file) return undefined;
  const ctx = await heContextFromFile(file);
  if (ctx.canDecrypt)
    throw new Error(`${file} holds the secret key: the server must never be able to decrypt; re-provision the server's kit`);
  return ctx;
}
