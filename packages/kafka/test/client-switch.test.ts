import { sql } from 'kysely';
import { createTestSchema, createTopics, produceMessages, seededRandom, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer, type IdempotentConsumerOptions } from '../src';
import { count, createLedger, handler, makeEvents, model, sameTotals, toMessages, totals, waitFor, type Entry } from './support/ledger';

/**
 * One group runs on one client: a member on the other client is refused at start(), and a group
 * stopped on kafkajs and started on @platformatic/kafka goes on from its committed offsets. Needs
 * both clients in one process, so it runs in the platformatic run (Node 22) only.
 */
describe('moving a group from kafkajs to @platformatic/kafka', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'switch');
    await createLedger(s.db, s.schema);
  });
  afterAll(async () => s.drop());

  (testClient() === 'platformatic' ? it : it.skip)('a platformatic member cannot join a kafkajs group; stopped and restarted on platformatic, the group goes on from its offsets', async () => {
    const [topic] = await createTopics(kafka, [{ prefix: 'switch', partitions: 2 }]);
    const events = makeEvents(300, seededRandom(5));
    await produceMessages(kafka, topic as string, toMessages(events.slice(0, 150)));
    const groupId = uniqueName('g');
    const options = (client: 'kafkajs' | 'platformatic'): IdempotentConsumerOptions<Entry> => ({ brokers, groupId, topics: [topic as string], db: s.db, schema: s.schema, handler: handler(s.schema), sessionTimeoutMs: 10_000, client });
    const first = new IdempotentConsumer<Entry>(options('kafkajs'));
    await first.start();
    try {
      await waitFor(() => count(s.db, s.schema, 'processed_events', sql`consumer_group = ${groupId}`), (n) => n === 150, 60_000);
      const intruder = new IdempotentConsumer<Entry>(options('platformatic'));
      await expect(intruder.start()).rejects.toThrow(/protocols are incompatible/);
      await expect(intruder.stopped).resolves.toEqual({ signal: undefined });
    } finally {
      await first.stop();
    }
    await produceMessages(kafka, topic as string, toMessages(events.slice(150)));
    const second = new IdempotentConsumer<Entry>(options('platformatic'));
    await second.start();
    try {
      const expected = model(events);
      expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 60_000)).toEqual(expected);
      expect(await count(s.db, s.schema, 'processed_events', sql`consumer_group = ${groupId}`)).toBe(events.length);
      // It started at the offsets kafkajs committed: nothing before them came again.
      expect(second.stats.processed).toBe(150);
      expect(second.stats.duplicates).toBe(0);
    } finally {
      await second.stop();
    }
  });
});
