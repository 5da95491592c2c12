/**
 * The live site list of a federation server: one session per connected site (hello, heartbeats,
 * resume over a new connection, the sweeper that drops a silent site). It knows nothing of jobs
 * beyond telling the scheduler when the set of sites changed or a site could not run a job.
 */
import { Channel, type MalformedMessageError } from '../streaming/index.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import type { Link } from '../transport/link.ts';
import type { Logger } from '../util/log.ts';
import { describeZodError } from '../util/zod-error.ts';
import type { SiteEntry } from './admin-commands.ts';
import { SESSION_PROTOCOL, type ServerToSite, SiteToServer, naturalSort } from './session.ts';

interface Session {
  site: string;
  org: string;
  channel: Channel;
  /** the site's name for the session's channel (x-flotilla-channel): a reconnection naming it resumes the session */
  channelId: string | null;
  /** the session's first connection's address (host:port) */
  remote: string;
  connectedAt: string;
  lastSeen: number;
  runningJobs: string[];
}

export interface SessionRegistryOptions {
  heartbeatTimeoutSeconds: number;
  log: Logger;
  /** the data plane's port told to each site at welcome (null: jobs use the gRPC port) */
  dataPort: () => number | null;
  /** a site connected or resumed: the scheduler may start a job */
  onSitesChanged: () => void;
  /** a site reported that it cannot run a job it was deployed */
  onJobFailed: (jobId: string, site: string, error: string) => void;
}

export class SessionRegistry {
  private readonly sessions = new Map<string, Session>();
  private sweeper: NodeJS.Timeout | null = null;

  constructor(private readonly opts: SessionRegistryOptions) {}

  /** the server's heartbeat timeout: the default of a job that sets none */
  get heartbeatTimeoutSeconds(): number {
    return this.opts.heartbeatTimeoutSeconds;
  }

  private get timeoutMs(): number {
    return this.opts.heartbeatTimeoutSeconds * 1000;
  }

  /** Starts dropping sites whose heartbeats stopped. */
  start(): void {
    const timeoutMs = this.timeoutMs;
    this.sweeper = setInterval(
      () => {
        const now = Date.now();
        for (const s of this.sessions.values()) {
          if (now - s.lastSeen > timeoutMs) {
            this.opts.log.warn({ site: s.site }, `no heartbeat for ${timeoutMs} ms: site considered gone`);
            s.channel.close('heartbeat timeout');
            this.drop(s);
          }
        }
      },
      Math.min(1000, timeoutMs / 3),
    );
    this.sweeper.unref();
  }

  /** Closes every session. */
  stop(reason: string): void {
    if (this.sweeper) clearInterval(this.sweeper);
    for (const s of this.sessions.values()) s.channel.close(reason);
  }

  /** Sites whose session has a connection now (one that dropped and is resuming does not count). */
  liveSites(): string[] {
    return naturalSort([...this.sessions.values()].filter((s) => !s.channel.isDetached).map((s) => s.site));
  }

  list(): SiteEntry[] {
    return this.liveSites().map((k) => {
      const s = this.sessions.get(k)!;
      return { site: s.site, org: s.org, connectedAt: s.connectedAt, lastSeenMsAgo: Date.now() - s.lastSeen, runningJobs: s.runningJobs };
    });
  }

  orgOf(site: string): string | null {
    return this.sessions.get(site)?.org ?? null;
  }

  /** Sends a session message (a job's deployment with its bundle as payload, a shutdown). */
  send(site: string, m: ServerToSite, payload?: AsyncIterable<Uint8Array>): Promise<void> {
    const s = this.sessions.get(site);
    if (!s) return Promise.reject(new Error(`site ${site} is not connected`));
    return s.channel.send(m, payload);
  }

  /** A session call: resumes the site's session when it names its live channel, else serves a new one. */
  connect(link: Link, peer: PeerIdentity, channelId: string | null, remote = 'an unknown address'): void {
    const live = this.sessions.get(peer.name);
    if (channelId !== null && live?.channelId === channelId && !live.channel.isClosed) {
      // the same site's session over a new call: it continues where it stopped
      live.channel.attach(link);
      this.opts.log.info({ site: peer.name }, 'session resumed over a new connection');
      return;
    }
    // a site that names its channel can resume it; waiting longer than the heartbeat timeout is pointless
    const resume = channelId !== null ? { timeoutMs: this.timeoutMs, onResumed: () => this.opts.onSitesChanged() } : undefined;
    const onMalformed = (e: MalformedMessageError): void =>
      this.opts.log.warn({ site: peer.name, err: e.detail }, 'malformed session message ignored');
    void this.serve(new Channel(link, { onMalformed, ...(resume && { resume }) }), peer, channelId, remote);
  }

  private async serve(channel: Channel, peer: PeerIdentity, channelId: string | null, remote: string): Promise<void> {
    const { log } = this.opts;
    let session: Session | null = null;
    const refuse = async (reason: string, what: string): Promise<void> => {
      log.warn({ site: peer.name, reason }, what);
      await channel.send({ type: 'refused', reason } satisfies ServerToSite).catch(() => undefined);
      channel.close(reason);
    };
    try {
      for await (const env of channel.messages()) {
        env.payload?.cancel('sessions carry no payloads from sites');
        const parsed = SiteToServer.safeParse(env.msg);
        // bad input from one site fails that site's session, never the server
        if (!parsed.success) return await refuse(`malformed session message: ${describeZodError(parsed.error)}`, 'session closed');
        const m = parsed.data;
        if (session === null) {
          if (m.type !== 'hello') return await refuse(`expected hello, got ${m.type}`, 'session refused');
          if (m.protocol !== SESSION_PROTOCOL)
            return await refuse(`site speaks session protocol ${m.protocol}, server speaks ${SESSION_PROTOCOL}`, 'session refused');
          if (m.site !== peer.name)
            return await refuse(`site name ${m.site} does not match the certificate's common name ${peer.name}`, 'session refused');
          const old = this.sessions.get(peer.name);
          // a live session of this site means a second process runs with the same kit: refuse the
          // newcomer, or the two would replace each other's session in a loop. A session whose
          // connection dropped (resuming) or that went quiet for half the heartbeat timeout is a
          // restarted site's old one and is replaced.
          if (old && !old.channel.isDetached && Date.now() - old.lastSeen < this.timeoutMs / 2)
            return await refuse(
              `${peer.name} is already connected from ${old.remote} since ${old.connectedAt}: another process runs with this site's kit; stop it (or wait ${this.opts.heartbeatTimeoutSeconds} s after it stopped)`,
              'second session of a connected site refused',
            );
          if (old) {
            old.channel.close('replaced by a new session of the same site');
            this.drop(old);
          }
          session = {
            site: peer.name,
            org: peer.org,
            channel,
            channelId,
            remote,
            connectedAt: new Date().toISOString(),
            lastSeen: Date.now(),
            runningJobs: [],
          };
          this.sessions.set(peer.name, session);
          await channel.send({
            type: 'welcome',
            site: peer.name,
            heartbeatSeconds: Math.max(1, this.opts.heartbeatTimeoutSeconds / 4),
            dataPort: this.opts.dataPort(),
          } satisfies ServerToSite);
          log.info({ site: peer.name, org: peer.org }, 'site connected');
          this.opts.onSitesChanged();
          continue;
        }
        session.lastSeen = Date.now();
        switch (m.type) {
          case 'heartbeat':
            session.runningJobs = m.runningJobs;
            break;
          case 'job_failed':
            this.opts.onJobFailed(m.jobId, peer.name, m.error);
            break;
          case 'hello':
            break;
        }
      }
    } catch (e) {
      log.warn({ site: peer.name, err: (e as Error).message }, 'session failed');
    } finally {
      if (session) this.drop(session, channel.closeReason);
      // a connection that broke the protocol before its hello: no session to drop, but the reason is logged
      else if (channel.closeReason !== null) log.warn({ site: peer.name, reason: channel.closeReason }, 'session connection closed');
    }
  }

  private drop(s: Session, reason: string | null = null): void {
    if (this.sessions.get(s.site) !== s) return;
    this.sessions.delete(s.site);
    this.opts.log.warn({ site: s.site, ...(reason !== null && { reason }) }, 'site disconnected');
  }
}
