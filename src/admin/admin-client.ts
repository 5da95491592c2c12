/**
 * The admin side: sends one command over mutual TLS with the admin's kit and returns its reply,
 * parsed with the command's reply schema from the admin command table. The server decides what
 * the caller may do from the certificate; a refusal or failure is thrown as an AdminError with
 * the server's code.
 */
import { resolve } from 'node:path';
import { type AdminConfig, type Kit, loadKit } from '../provision/kit.ts';
import { GrpcClient } from '../transport/grpc/client.ts';
import {
  ADMIN_COMMAND_TABLE,
  type AdminArgs,
  type AdminCommand,
  AdminError,
  AdminFailureSchema,
  type AdminReply,
} from '../deploy/admin-commands.ts';
import { type DownloadProgress, receiveResults } from '../deploy/download.ts';
import { listJobFiles } from '../deploy/job-bundle.ts';
import { encodeJobStream } from '../deploy/job-stream.ts';
import type { AdminReplyWire } from '../transport/grpc/wire.ts';
import { describeZodError } from '../util/zod-error.ts';

export { AdminError, type AdminErrorCode } from '../deploy/admin-commands.ts';

export class AdminClient {
  private readonly grpc: GrpcClient;
  readonly kit: Kit<AdminConfig>;

  constructor(kitOrDir: Kit<AdminConfig> | string, override: { host?: string; port?: number } = {}) {
    this.kit = typeof kitOrDir === 'string' ? loadKit(kitOrDir, 'admin') : kitOrDir;
    const c = this.kit.config;
    this.grpc = new GrpcClient({
      host: override.host ?? c.server.host,
      port: override.port ?? c.server.port,
      serverName: c.serverName,
      caPem: this.kit.caPem,
      certPem: this.kit.certPem,
      keyPem: this.kit.keyPem,
    });
  }

  /** Sends a command; resolves to its typed reply or throws an AdminError. `blob` is submit's job bundle. */
  async call<C extends AdminCommand>(
    command: C,
    ...[args, blob]: Record<string, never> extends AdminArgs<C>
      ? [args?: AdminArgs<C>, blob?: Uint8Array]
      : [args: AdminArgs<C>, blob?: Uint8Array]
  ): Promise<AdminReply<C>> {
    const r = await this.grpc.command({ command, args_json: JSON.stringify(args ?? {}), blob: blob ?? new Uint8Array(0) });
    return replyOf(command, r);
  }

  /**
   * Submits a job folder, streamed (Admin.Upload: any size up to the server's maxJobBytes, a
   * piece at a time from disk, each file's xxhash64 checked by the server); `followLinks` follows
   * symbolic links that stay inside it (default: refused). The server's limit and disk space are
   * checked before the first file byte is sent.
   */
  async submit(jobDir: string, opts: { followLinks?: boolean } = {}): Promise<string> {
    // the server's limit decides (and is named in its refusal): the folder is listed without one
    const { files } = listJobFiles(jobDir, { followLinks: opts.followLinks ?? false, maxBytes: Number.POSITIVE_INFINITY });
    const r = await this.grpc.upload({ command: 'submit', args_json: '{}', blob: new Uint8Array(0) }, encodeJobStream(files));
    return replyOf('submit', r).jobId;
  }

  /**
   * Downloads a job's server results into <outDir>/<job>/ (streamed: global models of any size
   * in bounded memory, each file checked against its xxhash64); returns that folder.
   */
  async download(job: string, outDir: string, onProgress?: (p: DownloadProgress) => void): Promise<string> {
    const dest = resolve(outDir, job);
    try {
      await receiveResults(
        this.grpc.download({ command: 'download', args_json: JSON.stringify({ job }), blob: new Uint8Array(0) }),
        dest,
        onProgress,
      );
    } catch (e) {
      throw new AdminError('internal', (e as Error).message);
    }
    return dest;
  }

  close(): void {
    this.grpc.close();
  }
}

/** A reply on the wire as the command's typed reply, or the server's failure as an AdminError. */
function replyOf<C extends AdminCommand>(command: C, r: AdminReplyWire): AdminReply<C> {
  let json: unknown;
  try {
    json = JSON.parse(r.json || 'null');
  } catch {
    throw new AdminError('bad_reply', `${command}: the server's reply is not JSON`);
  }
  if (!r.ok) {
    const f = AdminFailureSchema.safeParse(json);
    throw f.success
      ? new AdminError(f.data.code, f.data.message)
      : new AdminError('bad_reply', `${command} failed; the server's reason is unreadable`);
  }
  const parsed = ADMIN_COMMAND_TABLE[command].reply.safeParse(json);
  if (!parsed.success) throw new AdminError('bad_reply', `${command}: unexpected reply from the server: ${describeZodError(parsed.error)}`);
  return parsed.data as AdminReply<C>;
}
