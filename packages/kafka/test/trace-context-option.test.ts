import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { sql } from 'kysely';
import { IdempotentConsumer } from '../src';
import { waitFor } from './support/ledger';

describe('the consumer’s traceContext option', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('rows written through ctx.outbox record the context the given provider returns', async () => {
    const s = await createTestSchema(databaseUrl, 'trace_option');
    try {
      const [topic] = (await createTopics(kafka, [{ prefix: 'trace_option', partitions: 1 }])) as [string];
      const incoming = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
      const own = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'mine=1' };
      await produceMessages(kafka, topic, [{ key: 'a', value: '{}', headers: { 'event-id': 'in-1', traceparent: incoming } }]);
      const consumer = new IdempotentConsumer({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic], db: s.db, schema: s.schema,
        traceContext: () => own,
        handler: async (event, { trx, outbox }) => {
          await outbox.publish(trx, { topic: 'derived', key: 'a', eventId: `d:${event.id}`, value: 'x' });
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed, (n) => n >= 1, 60_000);
      } finally {
        await consumer.stop();
      }
      const { rows } = await sql<{ headers: Record<string, string> }>`SELECT headers FROM ${sql.id(s.schema, 'outbox')} WHERE event_id = 'd:in-1'`.execute(s.db);
      expect(rows[0]?.headers).toEqual(own);
      expect(() => new IdempotentConsumer({ client: testClient(), brokers, groupId: 'g', topics: [topic], db: s.db, schema: s.schema, traceContext: 'x' as never, handler: async () => {} })).toThrow(/traceContext must be a function/);
    } finally {
      await s.drop();
    }
  });
});
