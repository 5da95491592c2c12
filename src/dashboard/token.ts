/**
 * Dashboard sign-in tokens. `flotilla admin <kit> dashboard-token` asks the server, over the admin's
 * mutual TLS, for a token naming that admin (name, organisation and role from the certificate);
 * the dashboard takes the token as a bearer credential and every action it offers is authorized
 * with that role, exactly as the admin's own commands are. A token is
 * `flt1.<claims, base64url JSON>.<HMAC-SHA256 of both, base64url>` under a 32-byte key the server
 * keeps in its workspace (dashboard.key, mode 0600), so tokens survive a restart; deleting the key
 * file revokes every token at the next start.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { z } from 'zod';

const PREFIX = 'flt1';
const KEY_BYTES = 32;
/** Tokens longer than this are refused before any parsing. */
const MAX_TOKEN_CHARS = 4096;
export const DEFAULT_TOKEN_TTL_SECONDS = 12 * 3600;

export interface DashboardUser {
  name: string;
  org: string;
  role: string;
}

const Claims = z.strictObject({
  sub: z.string().min(1).max(256),
  org: z.string().min(1).max(256),
  role: z.string().min(1).max(64),
  iat: z.number().int(),
  exp: z.number().int(),
});
type Claims = z.infer<typeof Claims>;

const b64 = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

export class TokenSigner {
  private constructor(private readonly key: Buffer) {}

  /** A signer with a fresh key in memory (the simulator: its tokens live as long as the run). */
  static ephemeral(): TokenSigner {
    return new TokenSigner(randomBytes(KEY_BYTES));
  }

  /** The signer of a server workspace: its key file, created (0600, written whole, then renamed) when missing. */
  static open(path: string): TokenSigner {
    if (!existsSync(path)) {
      const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
      const fd = openSync(tmp, 'wx', 0o600);
      try {
        writeSync(fd, randomBytes(KEY_BYTES).toString('hex'));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
    }
    const key = Buffer.from(readFileSync(path, 'utf8').trim(), 'hex');
    if (key.length !== KEY_BYTES)
      throw new Error(`${path} is not a dashboard key (${KEY_BYTES} bytes in hex): delete it to make a new one`);
    return new TokenSigner(key);
  }

  private sign(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }

  issue(user: DashboardUser, ttlSeconds = DEFAULT_TOKEN_TTL_SECONDS, now = Date.now()): { token: string; expiresAt: string } {
    const iat = Math.floor(now / 1000);
    const claims: Claims = { sub: user.name, org: user.org, role: user.role, iat, exp: iat + Math.max(1, Math.floor(ttlSeconds)) };
    const body = `${PREFIX}.${b64(JSON.stringify(claims))}`;
    return { token: `${body}.${this.sign(body)}`, expiresAt: new Date(claims.exp * 1000).toISOString() };
  }

  /** The token's user, or why it is not valid. */
  verify(token: string, now = Date.now()): DashboardUser | string {
    if (token.length > MAX_TOKEN_CHARS) return 'token too long';
    const parts = token.split('.');
    if (parts.length !== 3 || parts[0] !== PREFIX) return 'not a dashboard token (flotilla admin <kit> dashboard-token makes one)';
    const body = `${parts[0]}.${parts[1]}`;
    const given = Buffer.from(parts[2]!, 'base64url');
    const expected = Buffer.from(this.sign(body), 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      return 'token signature is not valid (another server, or its key changed)';
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    } catch {
      return 'token claims are not JSON';
    }
    const c = Claims.safeParse(raw);
    if (!c.success) return 'token claims are malformed';
    if (c.data.exp * 1000 <= now) return `token expired at ${new Date(c.data.exp * 1000).toISOString()}`;
    return { name: c.data.sub, org: c.data.org, role: c.data.role };
  }
}
