import { sql } from 'kysely';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { apply, count, createLedger, totals, waitFor, type Entry } from './support/ledger';

/**
 * The consumer's own dead-letter path writes text it did not choose (a decoder's error message
 * quoting the payload, a handler's error message, the record's header names) into Postgres text
 * and jsonb columns: NUL and lone surrogates there must not fail the chunk forever.
 */
describe('dead-lettering records whose error or headers are not storable text', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'dlq_text');
    await createLedger(s.db, s.schema);
  });
  afterAll(async () => s?.drop());

  it('a payload with NUL that does not parse, a handler error with NUL and a lone surrogate, a header name with NUL: all dead-lettered, the good events applied', async () => {
    const [topic] = await createTopics(kafka, [{ prefix: 'dlqtext', partitions: 1 }]);
    await produceMessages(kafka, topic as string, [
      { key: 'k', value: '{"account":\u0000}', headers: { 'event-id': 'malformed-nul' } },
      { key: 'k', value: JSON.stringify({ account: 'a', amount: 1 }), headers: { 'event-id': 'good-1' } },
      { key: 'k', value: JSON.stringify({ account: 'nul-error', amount: 5 }), headers: { 'event-id': 'throws-nul' } },
      { key: 'k', value: '{"x":', headers: { 'event-id': 'header-nul', 'x\u0000y': 'v', 'x-ok': 'fine' } },
      { key: 'k', value: JSON.stringify({ account: 'a', amount: 2 }), headers: { 'event-id': 'good-2' } },
    ]);
    const group = uniqueName('g');
    const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
      brokers,
      groupId: group,
      topics: [topic as string],
      db: s.db,
      schema: s.schema,
      maxAttempts: 1,
      retryDelayMs: 50,
      handler: async (event, { trx }) => {
        if (event.value.account === 'nul-error') throw new Error(`bad \u0000 byte and a lone \ud800 surrogate`);
        await apply(trx, s.schema, event.value);
      },
    });
    await consumer.start();
    try {
      const dlq = sql`topic = ${`${topic as string}.dlq`}`;
      await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 2, 45_000);
      expect(await totals(s.db, s.schema)).toEqual({ a: { total: 3, applied: 2 } });
      expect(await count(s.db, s.schema, 'outbox', dlq)).toBe(3);
      const { rows } = await sql<{ event_id: string; error: string }>`
        SELECT event_id, error FROM ${sql.id(s.schema, 'processed_events')} WHERE consumer_group = ${group} AND status = 'dead_lettered' ORDER BY kafka_offset`.execute(s.db);
      expect(rows.map((r) => r.event_id)).toEqual(['malformed-nul', 'throws-nul', 'header-nul']);
      expect(rows[1]?.error).toBe('Error: bad \\u0000 byte and a lone \ufffd surrogate');
      const headers = await sql<{ h: Record<string, string> }>`SELECT headers AS h FROM ${sql.id(s.schema, 'outbox')} WHERE ${dlq} ORDER BY headers->>'dlq-original-offset'`.execute(s.db);
      expect(headers.rows[0]?.h['dlq-error']).toMatch(/^payload could not be decoded: .*\\u0000/);
      expect(headers.rows[1]?.h['dlq-error']).toBe('Error: bad \\u0000 byte and a lone \ufffd surrogate');
      expect(headers.rows[2]?.h).toMatchObject({ 'x-ok': 'fine', [`base64:${Buffer.from('x\u0000y').toString('base64')}`]: 'v' });
    } finally {
      await consumer.stop();
    }
  });
});
