import { sql } from 'kysely';
import { createTestSchema, createTopics, produceMessages, seededRandom, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer, type IdempotentConsumerOptions } from '../src';
import { count, createLedger, handler, makeEvents, model, sameTotals, toMessages, totals, waitFor, type Entry } from './support/ledger';

describe(`duplicates are applied once (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'dups');
    await createLedger(s.db, s.schema);
  });
  afterAll(async () => s.drop());

  const consumer = (topic: string, groupId: string, extra: Partial<IdempotentConsumerOptions<Entry>> = {}): IdempotentConsumer<Entry> =>
    new IdempotentConsumer<Entry>({ brokers, groupId, topics: [topic], db: s.db, schema: s.schema, handler: handler(s.schema), sessionTimeoutMs: 10_000, client: testClient(), ...extra });

  it.each([
    ['batch', { mode: 'batch' as const, batchSize: 100 }],
    ['per-event', { mode: 'event' as const }],
  ])('%s mode: 30 %% sent two or three times (also within one batch), effects equal the model', async (_name, extra) => {
    await sql`TRUNCATE ${sql.id(s.schema, 'totals')}`.execute(s.db);
    const [topic] = await createTopics(kafka, [{ prefix: 'dups', partitions: 3 }]);
    const random = seededRandom(42);
    const events = makeEvents(600, random);
    const sent = await produceMessages(kafka, topic as string, toMessages(events), { duplicateRate: 0.3, maxCopies: 3, random });
    // Half the copies right next to the original (same batch), half spread later.
    await produceMessages(kafka, topic as string, toMessages(events.slice(0, 50)), { duplicateRate: 1, adjacent: true, random });
    const group = uniqueName('g');
    const c = consumer(topic as string, group, extra);
    await c.start();
    try {
      const expected = model(events);
      const got = await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected) && c.stats.processed + c.stats.duplicates >= sent.length + 100);
      expect(got).toEqual(expected);
      expect(await count(s.db, s.schema, 'processed_events', sql`consumer_group = ${group}`)).toBe(events.length);
      expect(c.stats.processed).toBe(events.length);
      expect(c.stats.duplicates).toBeGreaterThanOrEqual(sent.length - events.length);
      expect(c.stats.conflicts).toBe(0);
    } finally {
      await c.stop();
    }
  });

  it('two consumer groups on one topic each apply every event once; a conflicting duplicate is reported', async () => {
    await sql`TRUNCATE ${sql.id(s.schema, 'totals')}`.execute(s.db);
    const [topic] = await createTopics(kafka, [{ prefix: 'groups', partitions: 2 }]);
    const events = makeEvents(200, seededRandom(3));
    await produceMessages(kafka, topic as string, toMessages(events), { duplicateRate: 0.2, random: seededRandom(4) });
    // Same id as e7, different payload.
    await produceMessages(kafka, topic as string, [{ key: 'x', value: JSON.stringify({ account: 'acct-0', amount: 999_999 }), headers: { 'event-id': 'e7' } }]);
    const [g1, g2] = [uniqueName('g1'), uniqueName('g2')];
    const a = consumer(topic as string, g1);
    const b = consumer(topic as string, g2, { onConflict: 'dead-letter' });
    await Promise.all([a.start(), b.start()]);
    try {
      const single = model(events);
      const doubled = Object.fromEntries(Object.entries(single).map(([k, v]) => [k, { total: v.total * 2, applied: v.applied * 2 }]));
      const got = await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, doubled) && a.stats.conflicts === 1 && b.stats.conflicts === 1);
      expect(got).toEqual(doubled);
      for (const g of [g1, g2]) expect(await count(s.db, s.schema, 'processed_events', sql`consumer_group = ${g}`)).toBe(events.length);
      expect(a.stats.conflicts).toBe(1);
      expect(b.stats.conflicts).toBe(1);
      // The dead-letter policy wrote the conflicting copy to the outbox, once.
      expect(await count(s.db, s.schema, 'outbox', sql`headers->>'dlq-reason' = 'conflicting-duplicate' AND headers->>'dlq-group' = ${g2}`)).toBe(1);
      expect(await count(s.db, s.schema, 'outbox', sql`headers->>'dlq-group' = ${g1}`)).toBe(0);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
