import net from 'node:net';
import { OUTBOX_CHANNEL, type Metrics } from '@effectively/core';
import { createTestSchema, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import pg from 'pg';
import { OutboxRelay, type OutboxRelayOptions } from '../src';
import { enqueue, newTopic, outboxCount, waitFor } from './support/outbox';

/** Records the relay's `relay_listener_connected` gauge, so a short outage is seen however brief. */
class ListenerGauge implements Metrics {
  readonly values: number[] = [];
  increment(): void {}
  observe(): void {}
  set(name: string, value: number): void {
    if (name === 'relay_listener_connected') this.values.push(value);
  }
}

/**
 * Whether the relay's loop is asleep between cycles (waiting for the poll timer or a
 * notification). White-box: no public stat says so, and a notification that arrives during a
 * cycle re-runs the loop without counting as a wake-up, so tests that count wake-ups publish
 * only while it sleeps.
 */
const asleep = (relay: OutboxRelay): boolean => (relay as unknown as { wake: (() => void) | undefined }).wake !== undefined;

/** A TCP proxy to Postgres that can be taken down (connections cut, new ones refused) and brought back on the same port. */
class Proxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  constructor(private readonly target: { host: string; port: number }) {}

  async up(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target.port, this.target.host);
      for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
        this.sockets.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => {
          this.sockets.delete(a);
          b.destroy();
        });
        a.pipe(b);
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('relay wake-ups: LISTEN/NOTIFY, with polling as the fallback', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  let topic: string;
  const relays: OutboxRelay[] = [];
  const cleanups: Array<() => Promise<unknown>> = [];
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_listen');
    topic = await newTopic(kafka, 'relay_listen');
  });
  afterAll(async () => {
    await Promise.allSettled(relays.map((r) => r.stop()));
    await Promise.allSettled(cleanups.map((c) => c()));
    await s.drop();
  });

  const relay = (extra: Partial<OutboxRelayOptions>): OutboxRelay => {
    const r = new OutboxRelay({ brokers, db: s.db, databaseUrl, schema: s.schema, ...extra });
    relays.push(r);
    return r;
  };
  let n = 0;
  /** Commits one row and waits (bounded) until the relay published and deleted it. */
  const deliver = async (options: { notify?: boolean } = {}, timeoutMs = 15_000): Promise<void> => {
    await enqueue(s.db, s.schema, [{ topic, key: `k${n % 3}`, value: { n: n++ } }], options);
    await waitFor(() => outboxCount(s.db, s.schema), (c) => c === 0, timeoutMs, 'row delivered');
  };
  const listenerBackends = async (clientId: string): Promise<number[]> => {
    const { rows } = await sql<{ pid: number }>`
      SELECT pid FROM pg_stat_activity
      WHERE application_name LIKE 'effectively-relay-listener:%' AND application_name = ${`effectively-relay-listener:${clientId}`}`.execute(s.db);
    return rows.map((r) => r.pid);
  };

  it('an idle relay (polling only every 60 s) is woken by a commit; after its LISTEN connection is terminated it catches up, reconnects, and notifications wake it again', async () => {
    const gauge = new ListenerGauge();
    const clientId = `listen-${s.schema}`.slice(0, 40);
    // No timer wakes it during this test: polls every 60 s, renews its 3-minute leases every minute.
    const r = relay({ clientId, pollIntervalMs: 60_000, leaseMs: 180_000, metrics: gauge });
    await r.start();
    await waitFor(() => r.stats.listening && r.stats.lanes === 64 && asleep(r), Boolean, 15_000, 'relay idle and listening');

    // Delivered long before the poll could: the notification woke it.
    let before = r.stats.notifiedWakeups;
    await deliver();
    expect(r.stats.notifiedWakeups).toBeGreaterThan(before);

    // Kill its LISTEN connection from the server side, and commit at once (the notification may be lost).
    const [pid, ...others] = await listenerBackends(clientId);
    expect(others).toEqual([]);
    expect(pid).toBeDefined();
    const { rows } = await sql<{ ok: boolean }>`SELECT pg_terminate_backend(${pid}::int) AS ok`.execute(s.db);
    expect(rows[0]?.ok).toBe(true);
    await deliver(); // the relay polls once when it loses the connection and once when it is back
    await waitFor(() => r.stats, (st) => st.listening && st.listenerReconnects >= 1, 30_000, 'listener reconnected');
    expect(gauge.values).toEqual([1, 0, 1]); // connected, lost, connected again
    const [pidAfter] = await listenerBackends(clientId);
    expect(pidAfter).toBeDefined();
    expect(pidAfter).not.toBe(pid);

    // And notifications wake it again.
    await waitFor(() => asleep(r), Boolean, 15_000, 'relay idle');
    before = r.stats.notifiedWakeups;
    await deliver();
    expect(r.stats.notifiedWakeups).toBeGreaterThan(before);
    expect(r.health()).toMatchObject({ status: 'ok', listening: true, lanes: 64 });
    expect(r.stats.published).toBe(3);

    await r.stop();
    expect(r.stats.listening).toBe(false);
    expect(await listenerBackends(clientId)).toEqual([]);
  });

  it('while the listener cannot reach Postgres at all, rows are delivered by polling; it reconnects once Postgres is reachable again', async () => {
    const url = new URL(databaseUrl);
    const proxy = new Proxy({ host: url.hostname, port: Number(url.port || 5432) });
    cleanups.push(() => proxy.down());
    await proxy.up();
    const viaProxy = new URL(databaseUrl);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    const gauge = new ListenerGauge();
    const r = relay({ clientId: `proxy-${s.schema}`.slice(0, 40), databaseUrl: viaProxy.toString(), pollIntervalMs: 300, metrics: gauge });
    await r.start();
    await waitFor(() => r.stats.listening && r.stats.lanes === 64, Boolean, 15_000, 'relay listening');
    await deliver();

    await proxy.down();
    await waitFor(() => r.stats.listening, (listening) => !listening, 15_000, 'listener lost');
    const before = r.stats.notifiedWakeups;
    for (let i = 0; i < 3; i++) await deliver(); // writers still NOTIFY; nobody hears it
    expect(r.stats.notifiedWakeups).toBe(before); // so these came by polling
    expect(r.stats.listening).toBe(false);
    expect(r.health()).toMatchObject({ status: 'ok', listening: false });

    await proxy.up();
    await waitFor(() => r.stats, (st) => st.listening && st.listenerReconnects >= 1, 30_000, 'listener back');
    expect(gauge.values).toEqual([1, 0, 1]); // failed reconnects in between change nothing
    await deliver();
    expect(r.stats.published).toBe(5);
    await r.stop();
  });

  it('notify: false sends no NOTIFY; the relay still delivers by polling', async () => {
    const spy = new pg.Client({ connectionString: databaseUrl });
    cleanups.push(() => spy.end());
    await spy.connect();
    const heard: string[] = [];
    spy.on('notification', (m) => {
      if (m.channel === OUTBOX_CHANNEL && m.payload === s.schema) heard.push(m.payload);
    });
    await spy.query(`LISTEN ${OUTBOX_CHANNEL}`);

    const r = relay({ pollIntervalMs: 300 });
    await r.start();
    await waitFor(() => r.stats.listening && r.stats.lanes === 64 && asleep(r), Boolean, 15_000, 'relay idle and listening');
    const before = r.stats.notifiedWakeups;
    await deliver({ notify: false });
    await deliver({ notify: false });
    expect(r.stats.notifiedWakeups).toBe(before);
    expect(r.stats.listening).toBe(true);

    // A notifying commit afterwards: notifications arrive in commit order, so had the silent
    // commits notified, theirs would be here first.
    await deliver({ notify: true });
    await waitFor(() => heard.length, (c) => c >= 1, 10_000, 'notification heard');
    expect(heard).toHaveLength(1);
    await r.stop();
  });

  it('an idle relay that polls rarely still renews its leases and heartbeat every third of leaseMs', async () => {
    const r = relay({ listen: false, databaseUrl: undefined, pollIntervalMs: 60_000, leaseMs: 900 });
    await r.start();
    await waitFor(() => r.stats.lanes, (l) => l === 64, 15_000, 'lanes taken');
    const state = async (): Promise<{ heartbeat: number; live: number }> => {
      const { rows } = await sql<{ heartbeat: string; live: string }>`
        SELECT (SELECT extract(epoch FROM heartbeat_at) * 1000 FROM ${sql.id(s.schema, 'outbox_relays')} WHERE relay_id = ${r.relayId})::float8 AS heartbeat,
               (SELECT count(*) FROM ${sql.id(s.schema, 'outbox_lanes')} WHERE owner = ${r.relayId} AND lease_until > now()) AS live`.execute(s.db);
      return { heartbeat: Number(rows[0]?.heartbeat), live: Number(rows[0]?.live) };
    };
    const first = await state();
    // Three lease periods later its heartbeat has moved on and none of its leases has run out.
    const later = await waitFor(state, (x) => x.heartbeat > first.heartbeat + 2_700, 15_000, 'heartbeat renewed while idle');
    expect(later.live).toBe(64);
    await r.stop();
  });
});
