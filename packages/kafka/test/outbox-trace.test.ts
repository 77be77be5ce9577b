import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { sql } from 'kysely';
import { IdempotentConsumer } from '../src';
import { waitFor } from './support/ledger';

describe('ctx.outbox in a handler', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('writes in the handler transaction, continues the incoming trace (traceparent), and a dead-letter copy of a relayed event gets its own event id', async () => {
    const s = await createTestSchema(databaseUrl, 'ctx_outbox');
    try {
      const [topic] = (await createTopics(kafka, [{ prefix: 'ctx_outbox', partitions: 1 }])) as [string];
      const traced = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
      await produceMessages(kafka, topic, [
        { key: 'a', value: JSON.stringify({ n: 1 }), headers: { 'event-id': 'in-1', traceparent: traced, tracestate: 'vendor=1' } },
        { key: 'b', value: JSON.stringify({ n: 2 }), headers: { 'event-id': 'in-2' } },
        { key: 'c', value: JSON.stringify({ n: 3, poison: true }), headers: { 'event-id': 'in-3', traceparent: traced } },
        { key: 'd', value: JSON.stringify({ n: 4, rollback: true }), headers: { 'event-id': 'in-4' } },
      ]);
      const consumer = new IdempotentConsumer<{ n: number; poison?: boolean; rollback?: boolean }>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic], db: s.db, schema: s.schema,
        onFailure: 'dead-letter', maxAttempts: 1, retryDelayMs: 20,
        handler: async (event, { trx, outbox }) => {
          if (event.value.poison === true) throw new Error('poison');
          await outbox.publish(trx, { topic: 'derived', key: String(event.key), value: { from: event.id } });
          if (event.value.rollback === true) throw new Error('rolled back after publishing');
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed + consumer.stats.deadLettered, (n) => n >= 4, 30_000);
      } finally {
        await consumer.stop();
      }
      const { rows } = await sql<{ topic: string; key: string; headers: Record<string, string>; payload: string }>`
        SELECT topic, convert_from(message_key, 'UTF8') AS key, headers, convert_from(payload, 'UTF8') AS payload
        FROM ${sql.id(s.schema, 'outbox')} ORDER BY id`.execute(s.db);
      const derived = rows.filter((r) => r.topic === 'derived');
      // in-4 published, then failed: its row was rolled back with the rest of its work.
      expect(derived.map((r) => JSON.parse(r.payload) as { from: string })).toEqual([{ from: 'in-1' }, { from: 'in-2' }]);
      expect(derived[0]?.headers).toMatchObject({ traceparent: traced, tracestate: 'vendor=1', 'content-type': 'application/json' });
      expect(derived[1]?.headers.traceparent).toBeUndefined();
      const dlq = rows.filter((r) => r.topic !== 'derived');
      expect(dlq.map((r) => r.key).sort()).toEqual(['c', 'd']);
      for (const r of dlq) {
        expect(r.headers['event-id']).toBeUndefined();
        expect(r.headers['dlq-event-id']).toMatch(/^in-[34]$/);
      }
    } finally {
      await s.drop();
    }
  });
});
