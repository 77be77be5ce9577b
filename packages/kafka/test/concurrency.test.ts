import { Kysely, PostgresDialect } from 'kysely';
import { Pool } from 'pg';
import { createTestSchema, createTopics, produceMessages, seededRandom, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { count, createLedger, handler, makeEvents, model, sameTotals, totals, waitFor, type Entry } from './support/ledger';

// Several partitions in flight at once (partitionsConsumedConcurrently: 4), copies of an event spread over
// different partitions so concurrent transactions race for the same claim, and a pool smaller
// than the number of partitions in flight.
describe(`partitions consumed concurrently (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it.each([
    ['batch mode, pool of 2 for 4 partitions in flight', { mode: 'batch' as const, batchSize: 25 }],
    ['per-event mode, pool of 2 for 4 partitions in flight', { mode: 'event' as const }],
  ])('%s: copies on different partitions are applied once', async (_name, options) => {
    const s = await createTestSchema(databaseUrl, 'conc');
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new Pool({ connectionString: databaseUrl, max: 2 }) }) });
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'conc', partitions: 4 }]);
      const random = seededRandom(77);
      const events = makeEvents(options.mode === 'event' ? 120 : 400, random);
      // Every event on a random partition; a third of them sent again, each copy on another random partition.
      const messages = events.flatMap((e) => {
        const message = (partition: number) => ({ key: e.entry.account, value: JSON.stringify(e.entry), headers: { 'event-id': e.id }, partition });
        const copies = random() < 0.33 ? [message(Math.floor(random() * 4)), message(Math.floor(random() * 4))] : [];
        return [message(Math.floor(random() * 4)), ...copies];
      });
      await produceMessages(kafka, topic as string, messages);
      const consumer = new IdempotentConsumer<Entry>({ brokers, groupId: uniqueName('g'), topics: [topic as string], db, schema: s.schema, handler: handler(s.schema), partitionsConsumedConcurrently: 4, client: testClient(), ...options });
      await consumer.start();
      try {
        const expected = model(events);
        expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 90_000)).toEqual(expected);
        // Kafka may redeliver (counted as duplicates again); every event is applied exactly once.
        await waitFor(async () => consumer.stats.processed + consumer.stats.duplicates, (n) => n >= messages.length, 30_000);
        expect(consumer.stats.processed).toBe(events.length);
        expect(consumer.stats.duplicates).toBeGreaterThanOrEqual(messages.length - events.length);
        expect(await count(s.db, s.schema, 'processed_events')).toBe(events.length);
      } finally {
        await consumer.stop();
      }
    } finally {
      await db.destroy();
      await s.drop();
    }
  });
});
