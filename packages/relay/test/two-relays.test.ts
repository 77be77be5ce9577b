import { createTestSchema, readTopic, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { OutboxRelay } from '../src';
import { countByStatus, enqueue, header, idsPerKey, makeMessages, outOfOrderKeys, rows, waitFor, newTopic } from './support/outbox';

describe('two relays on one schema', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_two');
  });
  afterAll(async () => s.drop());

  const relay = (clientId: string): OutboxRelay =>
    new OutboxRelay({ brokers, db: s.db, databaseUrl, schema: s.schema, clientId, batchSize: 50, pollIntervalMs: 50 });

  /** Sessions holding this schema's relay lock, from pg_locks. */
  const lockHolders = async (): Promise<number> => {
    const { rows: r } = await sql<{ n: string }>`
      SELECT count(*) AS n FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND ((classid::bigint << 32) | objid::bigint) = hashtext(${`effectively:relay:${s.schema}`})::bigint`.execute(s.db);
    return Number(r[0]?.n ?? 0);
  };

  it('only the lock holder publishes; the standby takes over when the leader stops or loses its lock connection; order per key holds throughout (F31)', async () => {
    const topic = await newTopic(kafka, 'relay_two', 2);
    const a = relay('relay-a');
    const b = relay('relay-b');
    try {
      await a.start();
      await waitFor(async () => a.stats.isLeader, (x) => x);
      await b.start();
      for (let t = 0; t < 10; t++) await enqueue(s.db, s.schema, makeMessages(topic, 100, 8, 'p1', t * 100));
      await waitFor(() => countByStatus(s.db, s.schema), (c) => c.published === 1000);
      expect(a.stats.published).toBe(1000);
      expect(b.stats).toMatchObject({ published: 0, isLeader: false, leaderAcquisitions: 0 });
      expect(await lockHolders()).toBe(1);

      // The leader's lock connection dies: it stops publishing until it (or the standby) holds the lock again.
      await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'effectively-relay-lock:relay-a'`.execute(s.db);
      await waitFor(async () => a.stats.leaderAcquisitions + b.stats.leaderAcquisitions, (n) => n >= 2);
      for (let t = 0; t < 5; t++) await enqueue(s.db, s.schema, makeMessages(topic, 100, 8, 'p2', t * 100));
      await waitFor(() => countByStatus(s.db, s.schema), (c) => c.published === 1500);
      expect(await lockHolders()).toBe(1);

      // Whoever leads now stops; the other takes over.
      const [leader, standby] = a.stats.isLeader ? [a, b] : [b, a];
      await leader.stop();
      for (let t = 0; t < 5; t++) await enqueue(s.db, s.schema, makeMessages(topic, 100, 8, 'p3', t * 100));
      await waitFor(() => countByStatus(s.db, s.schema), (c) => c.published === 2000);
      expect(standby.stats.isLeader).toBe(true);
      expect(standby.stats.published).toBeGreaterThanOrEqual(500);
      expect(await lockHolders()).toBe(1);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    expect(await lockHolders()).toBe(0);
    expect(a.stats.published + b.stats.published).toBeGreaterThanOrEqual(2000);

    const all = await rows(s.db, s.schema);
    const messages = await readTopic(kafka, topic);
    expect(new Set(messages.map((m) => header(m, 'event-id')))).toEqual(new Set(all.map((x) => x.event_id)));
    expect(outOfOrderKeys(idsPerKey(messages, new Map(all.map((x) => [x.event_id, x.id]))))).toEqual([]);
  });
});
