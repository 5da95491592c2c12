// The tracking store: rows per job/site/round/step in SQLite, the metricsSince cursor, live
// subscriptions and long polls, the row limit, and the migration of a jobs.sqlite written before
// tracking existed.
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { JobStore } from '../../../src/deploy/job-store.ts';
import { SERVER_SITE, TrackingStore, type TrackedRow, trackLogged, trackRound } from '../../../src/tracking/index.ts';
import { csvLines } from '../../../src/tracking/format.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-tracking-'));

test('rows get increasing ids, are seen by metricsSince at once and survive a reopen', () => {
  const path = join(tmp, 'a.sqlite');
  const s = TrackingStore.open(path, { flushMs: 60_000 });
  s.record('j1', { kind: 'scalar', site: 'site-1', key: 'loss', value: 0.5, round: 0, step: 3 });
  s.record('j2', { kind: 'scalar', site: 'site-1', key: 'loss', value: 9, round: 0 });
  s.record('j1', { kind: 'text', site: 'site-2', key: 'note', text: 'hello, "world"\nline 2', round: 1 });
  s.record('j1', { kind: 'param', site: 'site-2', key: 'lr', text: '0.1' });
  // not flushed yet (flushMs is long): a read flushes first
  const rows = s.metricsSince('j1');
  assert.deepEqual(
    rows.map((r) => [r.id, r.site, r.round, r.step, r.kind, r.key, r.value, r.text]),
    [
      [1, 'site-1', 0, 3, 'scalar', 'loss', 0.5, null],
      [3, 'site-2', 1, null, 'text', 'note', null, 'hello, "world"\nline 2'],
      [4, 'site-2', null, null, 'param', 'lr', null, '0.1'],
    ],
  );
  assert.deepEqual(
    s.metricsSince('j1', 1).map((r) => r.id),
    [3, 4],
  );
  assert.deepEqual(
    s.metricsSince('j1', 0, 1).map((r) => r.id),
    [1],
  );
  assert.deepEqual(s.params('j1'), { 'site-2': { lr: '0.1' } });
  assert.deepEqual(s.jobs(), ['j1', 'j2']);
  // CSV quotes what needs it
  assert.equal(csvLines([rows[1]!])[0]!.split(',').slice(0, 7).join(','), '3,j1,site-2,1,,text,note');
  assert.match(csvLines([rows[1]!])[0]!, /,"hello, ""world""\nline 2",/);
  s.close();
  const again = TrackingStore.open(path);
  assert.equal(again.metricsSince('j1').length, 3);
  const next = again.record('j1', { kind: 'scalar', site: 'site-1', key: 'loss', value: 0.25, round: 1, step: 4 });
  assert.equal(next!.id, 5, 'ids continue after the largest stored one');
  again.close();
});

test('subscribers see rows as they are recorded; a long poll answers with the first new row', async () => {
  const s = TrackingStore.open(join(tmp, 'b.sqlite'));
  const seen: TrackedRow[] = [];
  const off = s.subscribe('j1', (rows) => seen.push(...rows));
  const all: TrackedRow[] = [];
  const offAll = s.subscribe(null, (rows) => all.push(...rows));
  s.record('j1', { kind: 'scalar', site: 'site-1', key: 'loss', value: 1 });
  s.record('j2', { kind: 'scalar', site: 'site-1', key: 'loss', value: 2 });
  assert.deepEqual(
    seen.map((r) => r.value),
    [1],
  );
  assert.deepEqual(
    all.map((r) => r.jobId),
    ['j1', 'j2'],
  );
  off();
  offAll();
  s.record('j1', { kind: 'scalar', site: 'site-1', key: 'loss', value: 3 });
  assert.equal(seen.length, 1, 'unsubscribed');

  const started = Date.now();
  const polled = s.waitForRows('j1', 3, 10_000);
  setTimeout(() => s.record('j1', { kind: 'scalar', site: 'site-2', key: 'acc', value: 0.9 }), 100);
  const rows = await polled;
  assert.deepEqual(
    rows.map((r) => [r.site, r.key, r.value]),
    [['site-2', 'acc', 0.9]],
  );
  assert.ok(Date.now() - started < 5000, 'answered when the row came, not at the timeout');
  assert.deepEqual(await s.waitForRows('j1', 4, 50), [], 'nothing new: [] after the timeout');
  // close ends a long poll at once
  const hanging = s.waitForRows('j1', 4, 30_000);
  s.close();
  assert.deepEqual(await hanging, []);
});

test('a job past its row limit keeps its first rows and is reported once', () => {
  const dropped: string[] = [];
  const s = TrackingStore.open(join(tmp, 'c.sqlite'), { maxRowsPerJob: 5, onDropped: (j) => dropped.push(j) });
  for (let i = 0; i < 8; i++) s.record('big', { kind: 'scalar', site: 'site-1', key: 'x', value: i, step: i });
  s.record('small', { kind: 'scalar', site: 'site-1', key: 'x', value: 1 });
  assert.deepEqual(
    s.metricsSince('big').map((r) => r.value),
    [0, 1, 2, 3, 4],
  );
  assert.equal(s.metricsSince('small').length, 1);
  assert.deepEqual(dropped, ['big']);
  s.deleteJob('big');
  assert.equal(s.metricsSince('big').length, 0);
  s.close();
});

test('trackLogged and trackRound: params become a row each, round metrics rows of their site and of the server', () => {
  const s = TrackingStore.open(join(tmp, 'd.sqlite'));
  trackLogged(s, 'j', { kind: 'params', site: 'site-1', params: { lr: 0.1, opt: 'sgd', nesterov: true } });
  trackLogged(s, 'j', { site: 'site-1', key: 'loss', value: 0.7, round: 2, step: 11 });
  trackLogged(s, 'j', { kind: 'text', site: 'site-1', key: 'note', text: 'ok', round: 2 });
  trackRound(s, 'j', {
    round: 2,
    totalRounds: 3,
    sites: ['site-1', 'site-2'],
    siteMetrics: { 'site-1': { val_loss: 0.5 }, 'site-2': { val_loss: 0.7 } },
    metrics: { val_loss: 0.6 },
    failures: {},
    seconds: 1,
  });
  assert.deepEqual(
    s.metricsSince('j').map((r) => [r.site, r.kind, r.key, r.round, r.step, r.value ?? r.text]),
    [
      ['site-1', 'param', 'lr', null, null, '0.1'],
      ['site-1', 'param', 'opt', null, null, 'sgd'],
      ['site-1', 'param', 'nesterov', null, null, 'true'],
      ['site-1', 'scalar', 'loss', 2, 11, 0.7],
      ['site-1', 'text', 'note', 2, null, 'ok'],
      ['site-1', 'scalar', 'result/val_loss', 2, 2, 0.5],
      ['site-2', 'scalar', 'result/val_loss', 2, 2, 0.7],
      [SERVER_SITE, 'scalar', 'val_loss', 2, 2, 0.6],
    ],
  );
  s.close();
});

test('a jobs.sqlite written before tracking existed is migrated on open: jobs kept, tracking table added once', () => {
  // the schema of the job store before this change, with one job in it
  const legacy = join(tmp, 'legacy.sqlite');
  const db = new Database(legacy);
  db.exec(`
    CREATE TABLE jobs (
      id TEXT PRIMARY KEY, name TEXT NOT NULL, submitter TEXT NOT NULL, submitter_org TEXT NOT NULL,
      state TEXT NOT NULL, submitted_at TEXT NOT NULL, started_at TEXT, ended_at TEXT,
      sites TEXT, detail TEXT, result TEXT);
    CREATE TABLE job_events (
      id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs(id),
      at TEXT NOT NULL, state TEXT NOT NULL, detail TEXT);
    CREATE TABLE audit (
      id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, user TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL,
      command TEXT NOT NULL, args TEXT NOT NULL, allowed INTEGER NOT NULL, outcome TEXT NOT NULL);
    INSERT INTO jobs VALUES ('old-1', 'old', 'boss', 'hub', 'FINISHED', '2026-01-01T00:00:00.000Z', NULL, NULL, '["site-1"]', 'done', NULL);
  `);
  const tables = (d: Database.Database): string[] =>
    (d.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).all() as { name: string }[]).map((r) => r.name);
  assert.ok(!tables(db).includes('tracking'));
  db.close();

  const store = new JobStore(legacy);
  assert.equal(store.get('old-1')?.state, 'FINISHED', 'the old job is still there');
  store.tracking.record('old-1', { kind: 'scalar', site: 'site-1', key: 'loss', value: 1 });
  store.close();
  const reopened = new JobStore(legacy);
  assert.equal(reopened.tracking.metricsSince('old-1').length, 1);
  reopened.close();
  const check = new Database(legacy);
  assert.ok(tables(check).includes('tracking'));
  assert.deepEqual(
    (check.prepare(`SELECT name FROM schema_migrations`).all() as { name: string }[]).map((r) => r.name),
    ['001-tracking'],
    'applied once, recorded',
  );
  check.close();
});
