import { createDatabase, createOutbox } from '@effectively/core';
import { createTestSchema, readTopic, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { createRelay, type OutboxRelay } from '../src';
import { dedupe, header, newTopic, waitFor } from './support/outbox';

/**
 * A relay frozen inside its claim transaction (its afterKafkaAck hook never returns: a stuck
 * process, a GC pause, a debugger) holds its lane rows locked. Postgres ends that claim after
 * claimTimeoutMs (idle_in_transaction_session_timeout); the lease runs out; another relay takes
 * the lanes and publishes everything, the frozen claim's rows again.
 */
describe('a relay frozen inside a claim', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  const relays: OutboxRelay[] = [];
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_stall');
  });
  afterAll(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await s.drop();
  });

  it('loses its claim after claimTimeoutMs and its lanes after the lease; another relay publishes every row, in order per key; it reports failing', async () => {
    const topic = await newTopic(kafka, 'relay_stall', 3);
    const outbox = createOutbox({ schema: s.schema });
    await s.db.transaction().execute((trx) =>
      outbox.publish(trx, Array.from({ length: 60 }, (_, i) => ({ eventId: `st-${i}`, topic, key: `k${i % 6}`, value: { i } }))),
    );

    // Relay A on a pool of its own (its claim connection is the one Postgres will end).
    const databaseA = createDatabase({ connectionString: databaseUrl, max: 2, applicationName: 'effectively-stalled-relay' });
    let frozen = false;
    const a = createRelay({
      brokers, db: databaseA.db, schema: s.schema, listen: false, pollIntervalMs: 50, leaseMs: 1_000, claimTimeoutMs: 1_000, shutdownTimeoutMs: 1_000, relayId: 'frozen',
      hooks: {
        afterKafkaAck: () => {
          frozen = true;
          return new Promise<void>(() => undefined); // never returns
        },
      },
    });
    relays.push(a);
    await a.start();
    await waitFor(() => frozen, (f) => f, 30_000, 'relay A frozen after an ack');

    // Postgres ends the frozen claim: no session of A's stays idle in transaction.
    await waitFor(
      async () => (await sql<{ n: string }>`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'effectively-stalled-relay' AND state = 'idle in transaction'`.execute(s.db)).rows[0]?.n,
      (n) => Number(n) === 0,
      15_000,
      "A's claim ended by idle_in_transaction_session_timeout",
    );
    await waitFor(() => a.health().status, (st) => st === 'failing', 10_000, 'A reports failing (no cycle finished for too long)');

    const b = createRelay({ brokers, db: s.db, schema: s.schema, listen: false, pollIntervalMs: 50, leaseMs: 1_000, relayId: 'healthy' });
    relays.push(b);
    await b.start();
    await waitFor(
      async () => (await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(s.schema, 'outbox')}`.execute(s.db)).rows[0]?.n,
      (n) => Number(n) === 0,
      30_000,
      'B published everything',
    );
    const { rows: owners } = await sql<{ owner: string | null }>`SELECT DISTINCT owner FROM ${sql.id(s.schema, 'outbox_lanes')}`.execute(s.db);
    expect(owners.map((o) => o.owner)).toEqual(['healthy']);
    expect(b.health().status).toBe('ok');

    const messages = await readTopic(kafka, topic);
    const unique = dedupe(messages);
    expect(unique.map((m) => header(m, 'event-id')).sort()).toEqual(Array.from({ length: 60 }, (_, i) => `st-${i}`).sort());
    expect(messages.length).toBeGreaterThan(60); // A's acknowledged batch was sent again by B
    for (let k = 0; k < 6; k++) {
      const seq = unique.filter((m) => m.key?.toString() === `k${k}`).map((m) => (JSON.parse(String(m.value)) as { i: number }).i);
      expect(seq).toEqual([...seq].sort((x, y) => x - y));
    }
    void databaseA.destroy(); // its claim connection was ended under it and is never released
  });
});
