/** A TCP forwarder on loopback whose connections can be cut, like a network dropping them (tests only). */
import { type Server, type Socket, createServer, connect as netConnect } from 'node:net';

export class CuttableProxy {
  private readonly sockets = new Set<Socket>();
  private server: Server | null = null;
  port = 0;
  cuts = 0;

  async start(target: number, targetHost = '127.0.0.1'): Promise<number> {
    const server = createServer((c) => {
      const u = netConnect(target, targetHost);
      for (const s of [c, u]) {
        s.setNoDelay(true); // as grpc-js does on its own sockets: no Nagle delays on small frames
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      c.pipe(u);
      u.pipe(c);
    });
    this.server = server;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    this.port = (server.address() as { port: number }).port;
    return this.port;
  }

  /** Kills every connection through the proxy: both directions lose what is in flight. */
  cut(): void {
    this.cuts++;
    for (const s of this.sockets) s.destroy();
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    return server ? new Promise((r) => server.close(() => r())) : Promise.resolve();
  }
}
