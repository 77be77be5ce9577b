import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { apply, count, createLedger, totals, waitFor, type Entry } from './support/ledger';

describe("onFailure: 'halt'", () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('stops the partition at the failing event (nothing after it is applied) and resumes in order once it succeeds', async () => {
    const s = await createTestSchema(databaseUrl, 'halt');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'halt', partitions: 1 }]);
      const msgs = [1, 2, 3, 4, 5].map((i) => ({ key: 'k', value: JSON.stringify({ account: 'a', amount: i }), headers: { 'event-id': `h${i}` } }));
      await produceMessages(kafka, topic as string, msgs);
      let healthy = false;
      const order: number[] = [];
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema,
        onFailure: 'halt', maxAttempts: 2, retryDelayMs: 50, maxRetryDelayMs: 200,
        handler: async (event, { trx }) => {
          if (event.value.amount === 3 && !healthy) throw new Error('downstream not ready');
          await apply(trx, s.schema, event.value);
          order.push(event.value.amount);
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.handlerRetries, (n) => n >= 4, 30_000);
        // Well past maxAttempts: halted at 3, nothing dead-lettered, 4 and 5 not applied.
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 3, applied: 2 } });
        expect(await count(s.db, s.schema, 'outbox')).toBe(0);
        healthy = true;
        await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 5, 30_000);
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 15, applied: 5 } });
        expect(order).toEqual([1, 2, 3, 4, 5]);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });
});
