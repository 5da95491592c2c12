/**
 * A rogue site for the fuzzed-server tests: it holds a valid kit (its certificate is the project CA's)
 * and speaks the protocols by hand, so it can keep a proper session (hello, heartbeats, a deployed job's
 * bundle read to the end) while it sends malformed frames and messages on other connections: gRPC
 * Connect calls as Links, and raw mutual-TLS sockets on the data plane after their hello.
 */
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Kit, ClientConfig } from '../../src/provision/kit.ts';
import { Channel } from '../../src/streaming/channel.ts';
import { SESSION_PROTOCOL } from '../../src/deploy/session.ts';
import { RUNTIME_PROTOCOL } from '../../src/runtime/messages.ts';
import { FrameDecoder, type WireItem, writeFrame } from '../../src/transport/codec.ts';
import { GrpcClient } from '../../src/transport/grpc/client.ts';
import type { Frame, Link } from '../../src/transport/link.ts';
import { DATA_PLANE_PROTOCOL } from '../../src/transport/tls/server.ts';
import type { ConnectInfo } from '../../src/transport/peer.ts';
import { AsyncQueue } from '../../src/util/async-queue.ts';

export interface JobConnection {
  link: Link;
  /** task ids as they arrive (their payloads read and dropped) */
  tasks: AsyncQueue<string>;
  /** why the link closed, once it has */
  closed: Promise<string>;
  /** a raw control frame: any text */
  control(json: string): Promise<void>;
  raw(f: Frame): Promise<void>;
}

export interface DataPlaneSocket {
  socket: TLSSocket;
  frames: WireItem[];
  error: string | null;
  closed: Promise<void>;
}

export class RogueSite {
  readonly name: string;
  private readonly grpc: GrpcClient;
  private heartbeat: NodeJS.Timeout | null = null;
  private session: Channel | null = null;
  /** the job the server deployed to this site, once it has */
  jobId: string | null = null;

  constructor(
    private readonly kit: Kit<ClientConfig>,
    private readonly ports: { grpc: number; data: number | null },
  ) {
    this.name = kit.config.name;
    this.grpc = new GrpcClient(this.dial(ports.grpc));
  }

  private dial(port: number): { host: string; port: number; serverName: string; caPem: string; certPem: string; keyPem: string } {
    const { kit } = this;
    return { host: '127.0.0.1', port, serverName: kit.config.serverName, caPem: kit.caPem, certPem: kit.certPem, keyPem: kit.keyPem };
  }

  /** A proper session: hello, a heartbeat every second, each deployment's bundle read to the end. Resolves at the welcome. */
  async startSession(): Promise<void> {
    const ch = (this.session = new Channel(this.grpc.open({ purpose: 'session', jobId: null, channelId: null })));
    await ch.send({ type: 'hello', site: this.name, protocol: SESSION_PROTOCOL });
    const welcomed = new Promise<void>((resolve, reject) => {
      void (async () => {
        for await (const env of ch.messages()) {
          const m = env.msg as { type: string; jobId?: string };
          if (m.type === 'welcome') {
            this.heartbeat = setInterval(() => void ch.send({ type: 'heartbeat', runningJobs: [] }).catch(() => undefined), 1000);
            resolve();
          } else if (m.type === 'deploy' && env.payload) {
            for await (const _ of env.payload);
            this.jobId = m.jobId!;
          } else if (m.type === 'refused') reject(new Error(`session refused: ${JSON.stringify(m)}`));
        }
      })();
    });
    await welcomed;
  }

  /** A Connect call of the site (purpose, job and channel as metadata): a Link to write frames on. */
  open(info: ConnectInfo): Link {
    return this.grpc.open(info);
  }

  /** A job connection over gRPC for `jobId`, registered (resolves at `registered`). */
  async registeredJobConnection(jobId: string): Promise<JobConnection> {
    const link = this.grpc.open({ purpose: 'job', jobId, channelId: null });
    const ch = new Channel(link);
    const tasks = new AsyncQueue<string>();
    await ch.send({ type: 'register', site: this.name, protocol: RUNTIME_PROTOCOL });
    const registered = new Promise<void>((resolve, reject) => {
      void (async () => {
        for await (const env of ch.messages()) {
          const m = env.msg as { type: string; taskId?: string; reason?: string };
          // read to the end: a cancelled task payload fails the task at once, before any result of the rogue's
          if (env.payload) for await (const _ of env.payload);
          if (m.type === 'registered') resolve();
          else if (m.type === 'rejected') reject(new Error(`rejected: ${m.reason}`));
          else if (m.type === 'task') tasks.push(m.taskId!);
        }
        tasks.end();
        reject(new Error(`job connection closed before registration: ${ch.closeReason}`));
      })();
    });
    await registered;
    // heartbeats as an honest site's: the server drops this connection for what it sends, not for silence
    const beat = setInterval(() => void ch.send({ type: 'heartbeat' }).catch(() => undefined), 1000);
    void link.closed.then(() => clearInterval(beat));
    return {
      link,
      tasks,
      closed: link.closed,
      control: (json) => link.send({ type: 'control', json }),
      raw: (f) => link.send(f),
    };
  }

  /**
   * A raw socket on the data plane: `hello` is its first frame's text (a string as it is, anything else
   * as JSON). Resolves once the TLS handshake is done and the hello written; `frames` collects what the
   * server sends (welcome, refuse, then the link's frames), `error` a frame that did not parse.
   */
  dataPlane(hello: unknown): Promise<DataPlaneSocket> {
    const port = this.ports.data;
    if (port === null) throw new Error('the server has no data plane');
    return new Promise((resolve, reject) => {
      const o = this.dial(port);
      const socket = tlsConnect({ host: o.host, port: o.port, servername: o.serverName, ca: o.caPem, cert: o.certPem, key: o.keyPem });
      const d: DataPlaneSocket = { socket, frames: [], error: null, closed: new Promise<void>((r) => socket.once('close', () => r())) };
      const decoder = new FrameDecoder();
      socket.on('error', reject);
      socket.once('secureConnect', () => {
        writeFrame(socket, { type: 'hello', json: typeof hello === 'string' ? hello : JSON.stringify(hello) });
        socket.off('error', reject);
        socket.on('error', () => undefined);
        resolve(d);
      });
      socket.on('data', (b: Buffer) => {
        if (d.error !== null) return;
        const got = decoder.push(b);
        if (typeof got === 'string') d.error = got;
        else d.frames.push(...got);
      });
    });
  }

  /** The data plane hello of a job connection. */
  static jobHello(jobId: string): object {
    return { protocol: DATA_PLANE_PROTOCOL, purpose: 'job', jobId, channelId: null };
  }

  close(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.session?.close('rogue done');
    this.grpc.close();
  }
}
