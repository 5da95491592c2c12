/**
 * mem:// listeners: links inside one process, reached by name like a network address (tests,
 * the simulator's single-process federations). The accepting side names the dialler the way a
 * certificate would (`identity`).
 */
import { linkPair } from './in-memory.ts';
import type { Link } from './link.ts';
import type { ConnectInfo, PeerIdentity } from './peer.ts';

export type OnConnect = (link: Link, peer: PeerIdentity, info: ConnectInfo) => string | null;

const listening = new Map<string, OnConnect>();

export function listenMemory(name: string, onConnect: OnConnect): { close(): void } {
  if (listening.has(name)) throw new Error(`mem://${name} is already listening`);
  listening.set(name, onConnect);
  return { close: () => void (listening.get(name) === onConnect && listening.delete(name)) };
}

/** Connects to mem://`name` as `identity`; rejects with the listener's reason when it refuses. */
export async function dialMemory(name: string, identity: PeerIdentity, info: ConnectInfo, peer = 'server'): Promise<Link> {
  const onConnect = listening.get(name);
  if (!onConnect) throw new Error(`mem://${name}: nothing listens there`);
  const [clientEnd, serverEnd] = linkPair(peer, identity.name);
  const refused = onConnect(serverEnd, identity, info);
  if (refused !== null) {
    serverEnd.close(refused);
    throw new Error(`mem://${name}: refused: ${refused}`);
  }
  return clientEnd;
}
