import { sql } from 'kysely';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { apply, count, createLedger, totals, waitFor, type Entry } from './support/ledger';

describe(`poison and bad input are dead-lettered atomically; the partition moves on (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'bad');
    await createLedger(s.db, s.schema);
  });
  afterAll(async () => s.drop());

  it('a handler that always throws, malformed JSON, a tombstone, and missing/empty/oversized/non-UTF-8/NUL/ambiguous ids', async () => {
    const [topic] = await createTopics(kafka, [{ prefix: 'bad', partitions: 1 }]);
    const good = (i: number): { key: string; value: string; headers: Record<string, string> } => ({ key: 'k', value: JSON.stringify({ account: 'a', amount: i }), headers: { 'event-id': `good-${i}` } });
    const messages = [
      good(1),
      { key: 'k', value: JSON.stringify({ account: 'poison', amount: 5 }), headers: { 'event-id': 'poison-1' } },
      good(2),
      { key: 'k', value: '{not json', headers: { 'event-id': 'malformed-1' } },
      good(3),
      { key: 'k', value: null, headers: { 'event-id': 'tombstone-1' } },
      { key: 'k', value: JSON.stringify({ account: 'a', amount: 1000 }) }, // no id header
      { key: 'k', value: JSON.stringify({ account: 'a', amount: 1000 }), headers: { 'event-id': '' } },
      { key: 'k', value: JSON.stringify({ account: 'a', amount: 1000 }), headers: { 'event-id': 'x'.repeat(10_000) } },
      { key: 'k', value: JSON.stringify({ account: 'a', amount: 1000 }), headers: { 'event-id': Buffer.from([0xc3, 0x28, 0xff]) } },
      { key: 'k', value: JSON.stringify({ account: 'a', amount: 1000 }), headers: { 'event-id': 'nul\u0000id' } },
      { key: 'k', value: JSON.stringify({ account: 'a', amount: 1000 }), headers: { 'event-id': ['one', 'two'] } },
      good(4),
    ];
    await produceMessages(kafka, topic as string, messages);
    // Redeliver part of the stream: dead-lettering must itself be idempotent.
    await produceMessages(kafka, topic as string, messages.slice(0, 6));
    const group = uniqueName('g');
    const attemptsSeen: number[] = [];
    const consumer = new IdempotentConsumer<Entry>({
      brokers,
      groupId: group,
      topics: [topic as string],
      db: s.db,
      schema: s.schema,
      client: testClient(),
      batchSize: 50,
      maxAttempts: 3,
      retryDelayMs: 50,
      handler: async (event, { trx, attempt }) => {
        await apply(trx, s.schema, event.value);
        if (event.value.account === 'poison') {
          attemptsSeen.push(attempt);
          throw new Error('poison pill');
        }
      },
    });
    await consumer.start();
    try {
      const dlq = sql`topic = ${`${topic as string}.dlq`}`;
      await waitFor(() => count(s.db, s.schema, 'outbox', dlq), (n) => n === 9, 60_000);
      await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 4, 30_000);
      // The good events are applied exactly once; the poison's writes were rolled back each time.
      expect(await totals(s.db, s.schema)).toEqual({ a: { total: 1 + 2 + 3 + 4, applied: 4 } });
      expect(attemptsSeen).toEqual([1, 2, 3]);
      const { rows } = await sql<{ event_id: string; status: string; error: string | null; attempts: number }>`
        SELECT event_id, status, error, attempts FROM ${sql.id(s.schema, 'processed_events')} WHERE consumer_group = ${group} AND status = 'dead_lettered' ORDER BY kafka_offset`.execute(s.db);
      expect(rows.map((r) => r.event_id.startsWith('invalid:') ? 'invalid' : r.event_id)).toEqual(['poison-1', 'malformed-1', 'tombstone-1', 'invalid', 'invalid', 'invalid', 'invalid', 'invalid', 'invalid']);
      expect(rows[0]).toMatchObject({ attempts: 3, error: expect.stringContaining('poison pill') });
      expect(rows.slice(3).map((r) => r.error?.split(': ')[1])).toEqual(['missing', 'empty', 'too-long', 'not-utf8', 'contains-nul', 'ambiguous']);
      // Each dead-letter message carries the reason and the original coordinates, once.
      const reasons = await sql<{ reason: string }>`SELECT headers->>'dlq-reason' AS reason FROM ${sql.id(s.schema, 'outbox')} WHERE ${dlq} ORDER BY id`.execute(s.db);
      expect(reasons.rows.map((r) => r.reason).sort()).toEqual(['handler-failed', 'invalid-event-id', 'invalid-event-id', 'invalid-event-id', 'invalid-event-id', 'invalid-event-id', 'invalid-event-id', 'malformed-payload', 'tombstone']);
    } finally {
      await consumer.stop();
    }
  });
});
