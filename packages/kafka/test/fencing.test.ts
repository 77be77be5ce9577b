import { sql } from 'kysely';
import { createTestSchema, createTopics, produceMessages, seededRandom, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { startConsumerChild } from './support/child';
import { count, createLedger, handler, makeEvents, model, sameTotals, toMessages, totals, waitFor, type Entry } from './support/ledger';

describe(`zombie fencing and shutdown (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('a member whose partition was taken by a newer owner cannot commit effects', async () => {
    const s = await createTestSchema(databaseUrl, 'fence');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'fence', partitions: 1 }]);
      const group = uniqueName('g');
      const first = makeEvents(50, seededRandom(1), 'a');
      const second = makeEvents(50, seededRandom(2), 'b');
      await produceMessages(kafka, topic as string, toMessages(first));
      const options = { brokers, groupId: group, topics: [topic as string], db: s.db, schema: s.schema, handler: handler(s.schema), batchSize: 10, sessionTimeoutMs: 10_000, client: testClient() };
      const zombie = new IdempotentConsumer<Entry>(options);
      await zombie.start();
      try {
        await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, model(first)));
        // Another member takes the partition (as after a rebalance this member missed).
        await sql`UPDATE ${sql.id(s.schema, 'partition_fences')} SET epoch = epoch + 1, member_id = 'newer-owner'`.execute(s.db);
        await produceMessages(kafka, topic as string, toMessages(second));
        await waitFor(async () => zombie.stats.fenced, (n) => n > 0, 30_000);
        expect(await totals(s.db, s.schema)).toEqual(model(first));
        expect(await count(s.db, s.schema, 'processed_events')).toBe(first.length);
      } finally {
        await zombie.stop();
      }
      // The rightful owner (a fresh member) takes over and applies the rest exactly once.
      const owner = new IdempotentConsumer<Entry>(options);
      await owner.start();
      try {
        const expected = model([...first, ...second]);
        expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected))).toEqual(expected);
      } finally {
        await owner.stop();
      }
    } finally {
      await s.drop();
    }
  });

  it('SIGTERM mid-batch: stops within bounds, exits cleanly, and a restart converges', async () => {
    const s = await createTestSchema(databaseUrl, 'term');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'sigterm', partitions: 2 }]);
      const events = makeEvents(400, seededRandom(31));
      await produceMessages(kafka, topic as string, toMessages(events), { duplicateRate: 0.2, random: seededRandom(32) });
      const env = { BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: s.schema, TOPIC: topic as string, GROUP: uniqueName('g'), BATCH_SIZE: '20', HANDLER_DELAY_MS: '5' };
      const first = startConsumerChild(env);
      await first.waitForLine(/^committed/);
      expect(await first.stop()).toBe('0');
      expect(await count(s.db, s.schema, 'processed_events')).toBeLessThan(events.length);
      const second = startConsumerChild(env);
      try {
        const expected = model(events);
        expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 90_000)).toEqual(expected);
        expect(await count(s.db, s.schema, 'processed_events')).toBe(events.length);
      } finally {
        expect(await second.stop()).toBe('0');
      }
    } finally {
      await s.drop();
    }
  });
});
