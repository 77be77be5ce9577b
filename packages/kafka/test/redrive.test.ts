import { createRelay, type OutboxRelay } from '@effectively/relay';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { IdempotentConsumer, listDeadLetters, replayDeadLetters, REDRIVE_HEADER, type ConsumerStats } from '../src';
import { apply, count, createLedger, totals, waitFor, type Entry } from './support/ledger';

/**
 * A dead-lettered event can be re-driven deliberately (once per replay), while an accidental
 * copy of it is still skipped, counted apart from ordinary duplicates.
 */
describe('re-driving dead letters', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  let relay: OutboxRelay | undefined;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'redrive');
    await createLedger(s.db, s.schema);
  });
  afterAll(async () => {
    await relay?.stop();
    await s?.drop();
  });

  const seen = (stats: ConsumerStats): number => stats.processed + stats.duplicates + stats.deadLettered + stats.deadLetteredDuplicates;
  const entry = (account: string, id: string, headers: Record<string, string> = {}): { key: string; value: string; headers: Record<string, string> } => ({
    key: 'k',
    value: JSON.stringify({ account, amount: 1 }),
    headers: { 'event-id': id, ...headers },
  });

  it('a fixed handler re-drives a dead letter once; a plain copy and a second copy of the same replay are skipped; a later replay of an applied event is a duplicate', async () => {
    const [topic, dlqTopic] = await createTopics(kafka, [
      { prefix: 'redrive', partitions: 1 },
      { prefix: 'redrive_dlq', partitions: 1 },
    ]);
    const t = topic as string;
    const dlq = dlqTopic as string;
    relay = createRelay({ brokers, db: s.db, databaseUrl, schema: s.schema, pollIntervalMs: 100 });
    await relay.start();
    let broken = true;
    const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
      brokers,
      groupId: uniqueName('g'),
      topics: [t],
      db: s.db,
      schema: s.schema,
      maxAttempts: 2,
      retryDelayMs: 50,
      deadLetterTopic: () => dlq,
      handler: async (event, { trx }) => {
        if (event.value.account === 'poison' && broken) throw new Error('handler bug');
        await apply(trx, s.schema, event.value);
      },
    });
    await consumer.start();
    try {
      await produceMessages(kafka, t, [entry('good', 'good-1'), entry('poison', 'poison-1'), entry('good', 'good-2')]);
      await waitFor(async () => seen(consumer.stats), (n) => n >= 3, 60_000);
      expect(consumer.stats).toMatchObject({ processed: 2, deadLettered: 1 });
      await waitFor(() => count(s.db, s.schema, 'outbox'), (n) => n === 0, 30_000);
      const letters = await listDeadLetters({ brokers, deadLetterTopics: [dlq] });
      expect(letters.map((l) => [l.eventId, l.eventIdOrigin, l.reason, l.originalTopic, l.originalOffset])).toEqual([['poison-1', 'producer', 'handler-failed', t, '1']]);

      // (good-2 may have been seen twice: it is redelivered behind the first failure of poison-1.)
      const before = { ...consumer.stats };
      // An accidental copy: skipped, counted apart from ordinary duplicates.
      await produceMessages(kafka, t, [entry('poison', 'poison-1')]);
      await waitFor(async () => consumer.stats.deadLetteredDuplicates, (n) => n >= 1, 60_000);
      expect(consumer.stats).toMatchObject({ duplicates: before.duplicates, deadLetteredDuplicates: 1, redriven: 0 });

      broken = false;
      // Dry run by default: nothing written.
      const dry = await replayDeadLetters({ brokers, db: s.db, schema: s.schema, deadLetterTopics: [dlq], filter: { eventIds: ['poison-1'] } });
      expect(dry).toMatchObject({ dryRun: true, written: 0 });
      expect(dry.replayed.map((l) => l.eventId)).toEqual(['poison-1']);
      expect(await count(s.db, s.schema, 'outbox')).toBe(0);

      const run = await replayDeadLetters({ brokers, db: s.db, schema: s.schema, deadLetterTopics: [dlq], filter: { eventIds: ['poison-1'], reasons: ['handler-failed'] }, execute: true });
      expect(run).toMatchObject({ dryRun: false, written: 1 });
      await waitFor(async () => consumer.stats.redriven, (n) => n >= 1, 60_000);
      expect((await totals(s.db, s.schema)).poison).toEqual({ total: 1, applied: 1 });
      const { rows } = await sql<{ status: string; redrive_id: string | null }>`SELECT status, redrive_id FROM ${sql.id(s.schema, 'processed_events')} WHERE event_id = 'poison-1'`.execute(s.db);
      expect(rows).toEqual([{ status: 'processed', redrive_id: run.redriveId }]);

      // A second copy of the same replay (the relay may send twice): a duplicate.
      await produceMessages(kafka, t, [entry('poison', 'poison-1', { [REDRIVE_HEADER]: run.redriveId })]);
      await waitFor(async () => consumer.stats.duplicates, (n) => n >= before.duplicates + 1, 60_000);
      // Another replay of the now applied event: a duplicate too.
      const again = await replayDeadLetters({ brokers, db: s.db, schema: s.schema, deadLetterTopics: [dlq], execute: true });
      expect(again.written).toBe(1);
      await waitFor(async () => consumer.stats.duplicates, (n) => n >= before.duplicates + 2, 60_000);
      expect(consumer.stats).toMatchObject({ processed: 3, redriven: 1, duplicates: before.duplicates + 2, deadLetteredDuplicates: 1, deadLettered: 1 });
      expect(await totals(s.db, s.schema)).toEqual({ good: { total: 2, applied: 2 }, poison: { total: 1, applied: 1 } });
    } finally {
      await consumer.stop();
    }
  });
});
