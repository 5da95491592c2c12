/**
 * The admin side: sends one command over mutual TLS with the admin's kit.
 * The server decides what the caller may do from the certificate.
 */
import { resolve } from 'node:path';
import { type AdminConfig, type Kit, loadKit } from '../provision/kit.ts';
import { GrpcClient } from '../transport/grpc/client.ts';
import { type DownloadProgress, receiveResults } from '../deploy/download.ts';
import { packJob } from '../deploy/job-bundle.ts';

export class AdminError extends Error {
  override readonly name = 'AdminError';
}

export class AdminClient {
  private readonly grpc: GrpcClient;
  readonly kit: Kit<AdminConfig>;

  constructor(kitOrDir: Kit<AdminConfig> | string, override: { host?: string; port?: number } = {}) {
    this.kit = typeof kitOrDir === 'string' ? loadKit(kitOrDir, 'admin') : kitOrDir;
    const c = this.kit.config;
    this.grpc = new GrpcClient({ host: override.host ?? c.server.host, port: override.port ?? c.server.port, serverName: c.serverName, caPem: this.kit.caPem, certPem: this.kit.certPem, keyPem: this.kit.keyPem });
  }

  /** Sends a command; resolves to its JSON result or throws the server's message. */
  async call(command: string, args: Record<string, unknown> = {}, blob?: Uint8Array): Promise<{ json: unknown; blob: Uint8Array }> {
    const r = await this.grpc.command({ command, args_json: JSON.stringify(args), blob: blob ?? new Uint8Array(0) });
    const json = JSON.parse(r.json || 'null') as unknown;
    if (!r.ok) throw new AdminError(typeof json === 'string' ? json : `${command} failed`);
    return { json, blob: r.blob };
  }

  async submit(jobDir: string): Promise<string> {
    const r = await this.call('submit', {}, packJob(jobDir));
    return (r.json as { jobId: string }).jobId;
  }

  /**
   * Downloads a job's server results into <outDir>/<job>/ (streamed: global models of any size
   * in bounded memory, each file checked against its xxhash64); returns that folder.
   */
  async download(job: string, outDir: string, onProgress?: (p: DownloadProgress) => void): Promise<string> {
    const dest = resolve(outDir, job);
    try {
      await receiveResults(this.grpc.download({ command: 'download', args_json: JSON.stringify({ job }), blob: new Uint8Array(0) }), dest, onProgress);
    } catch (e) {
      throw new AdminError((e as Error).message);
    }
    return dest;
  }

  close(): void {
    this.grpc.close();
  }
}
