// Addresses pick the transport driver: tls://, grpc://, mem://; a bad one is refused saying what a good one looks like.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AddressError, formatAddress, parseAddress } from '../../../src/transport/address.ts';
import { FallbackDialer, type Dialer, dialerFor } from '../../../src/transport/dialer.ts';
import { listenerFor } from '../../../src/transport/listener.ts';
import { DataPlaneDialError } from '../../../src/transport/tls/dial.ts';

test('addresses parse by scheme and print back the same', () => {
  assert.deepEqual(parseAddress('tls://127.0.0.1:8003'), { scheme: 'tls', host: '127.0.0.1', port: 8003 });
  assert.deepEqual(parseAddress('grpc://server.example.org:8002'), { scheme: 'grpc', host: 'server.example.org', port: 8002 });
  assert.deepEqual(parseAddress('grpc://[::1]:0'), { scheme: 'grpc', host: '::1', port: 0 });
  assert.deepEqual(parseAddress('mem://hub-1'), { scheme: 'mem', name: 'hub-1' });
  for (const a of ['tls://127.0.0.1:8003', 'grpc://[::1]:9', 'mem://x']) assert.equal(formatAddress(parseAddress(a)), a);
  for (const bad of ['http://x:1', 'tls://x', 'tls://x:99999', 'grpc://:5', 'mem://', 'mem://a/b', '127.0.0.1:8002']) {
    assert.throws(
      () => parseAddress(bad),
      (e) => e instanceof AddressError && e.message.includes(bad),
      bad,
    );
  }
});

test('mem:// listener and dialer: the listener sees the dialler as its identity says, and may refuse', async () => {
  const seen: string[] = [];
  const l = listenerFor('mem://address-test', {
    onConnect: (link, peer, info) => (seen.push(`${peer.name}:${info.purpose}`), info.purpose === 'job' ? 'no jobs here' : null),
  });
  assert.equal(await l.start(), 'mem://address-test');
  const d = dialerFor('mem://address-test', { identity: { name: 'site-7', org: 'o', kind: 'client' } });
  const link = await d.dial({ purpose: 'session', jobId: null, channelId: null });
  assert.equal(link.peer, 'server');
  await assert.rejects(d.dial({ purpose: 'job', jobId: 'j', channelId: null }), /refused: no jobs here/);
  assert.deepEqual(seen, ['site-7:session', 'site-7:job']);
  await l.close();
  await assert.rejects(d.dial({ purpose: 'session', jobId: null, channelId: null }), /nothing listens there/);
  assert.throws(() => dialerFor('tls://127.0.0.1:1'), /needs serverName, caPem, certPem and keyPem/);
});

test('FallbackDialer: an unreachable primary on the first dial switches for good; a refusal, or a later failure, does not', async () => {
  const memListener = listenerFor('mem://fallback-test', { onConnect: () => null });
  await memListener.start();
  const fallback = dialerFor('mem://fallback-test', { identity: { name: 's', org: 'o', kind: 'client' } });
  const failing = (reachable: boolean): Dialer => ({
    address: 'tls://10.0.0.1:1',
    dial: async () => Promise.reject(new DataPlaneDialError('no route', reachable)),
    close: () => undefined,
  });
  const info = { purpose: 'job' as const, jobId: 'j', channelId: null };
  const warned: string[] = [];
  const d = new FallbackDialer(failing(false), fallback, (e) => warned.push(e.message));
  assert.equal((await d.dial(info)).peer, 'server');
  assert.equal(d.using, 'fallback');
  assert.equal(d.address, 'mem://fallback-test');
  await d.dial(info);
  assert.deepEqual(warned, ['no route'], 'warned once');
  const refusing = new FallbackDialer(failing(true), fallback);
  await assert.rejects(refusing.dial(info), /no route/);
  assert.equal(refusing.using, 'undecided');
  await memListener.close();
});
