import { CompiledQuery, sql, type Transaction } from 'kysely';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer, type IdempotentConsumerOptions } from '../src';
import { apply, count, createLedger, totals, waitFor, type Entry } from './support/ledger';

// A handler that catches a database error and returns leaves its transaction aborted: Postgres
// ignores every later statement and turns COMMIT into ROLLBACK. Nothing of the event was kept, so
// it must not count as processed (its offset committed, the event lost): it fails, is retried,
// and is dead-lettered after its last attempt.
describe('a handler that catches a database error and returns', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const entry = (id: string, amount: number) => ({ key: 'k', value: JSON.stringify({ account: 'a', amount }), headers: { 'event-id': id } });
  type Options = Partial<IdempotentConsumerOptions<Entry>> & Pick<IdempotentConsumerOptions<Entry>, 'handler'>;
  type Records = Array<{ event_id: string; status: string; error: string | null }>;

  /**
   * Runs a consumer with `options` over `ids` (amounts 1, 2, 4, …) on a topic and schema of its
   * own until `done` holds for its stats; then gives `check` the consumer, the schema and the
   * processed_events records in id order.
   */
  async function consume(prefix: string, ids: string[], options: (schema: string) => Options, done: (stats: IdempotentConsumer<Entry>['stats']) => boolean, check: (consumer: IdempotentConsumer<Entry>, s: TestSchema, records: Records) => Promise<void>): Promise<void> {
    const s = await createTestSchema(databaseUrl, prefix);
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix, partitions: 1 }]);
      await produceMessages(kafka, topic as string, ids.map((id, i) => entry(id, 2 ** i)));
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(), brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema, retryDelayMs: 20, ...options(s.schema) });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats, done, 30_000);
      } finally {
        await consumer.stop();
      }
      const { rows } = await sql<Records[number]>`SELECT event_id, status, error FROM ${sql.id(s.schema, 'processed_events')} ORDER BY event_id`.execute(s.db);
      await check(consumer, s, rows);
    } finally {
      await s.drop();
    }
  }

  /** The failing statement, its error caught. */
  const swallow = (trx: Transaction<unknown>): Promise<unknown> => sql`SELECT 1 / 0`.execute(trx).catch(() => undefined);

  it.each([
    ['per-event mode', 'event', false],
    ['per-event mode, preparedStatements: false', 'event-unprepared', false],
    ['batch mode', 'batch', false],
    ['batch mode with a batch handler that catches too', 'batch', true],
  ] as const)('%s: the event is not counted processed; it is retried, then dead-lettered; the other events are applied once', async (_name, mode, withBatchHandler) => {
    const calls = new Map<number, number>();
    await consume(
      'swallow',
      ['s1', 's2', 's3'],
      (schema) => ({
        mode: mode === 'batch' ? 'batch' : 'event',
        ...(mode === 'event-unprepared' ? { preparedStatements: false } : {}),
        maxAttempts: 3,
        maxRetryDelayMs: 50,
        handler: async (event, { trx }) => {
          calls.set(event.value.amount, (calls.get(event.value.amount) ?? 0) + 1);
          await apply(trx, schema, event.value);
          if (event.value.amount === 2) await swallow(trx);
        },
        ...(withBatchHandler
          ? {
              batchHandler: async (events, { trx }) => {
                for (const e of events) await apply(trx, schema, e.value);
                await swallow(trx);
              },
            }
          : {}),
      }),
      (st) => st.processed === 2 && st.deadLettered === 1,
      async (consumer, s, rows) => {
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 5, applied: 2 } });
        expect(calls.get(2)).toBe(3);
        expect(consumer.stats).toMatchObject({ processed: 2, deadLettered: 1, handlerRetries: 2, duplicates: 0 });
        expect(rows.map((r) => [r.event_id, r.status])).toEqual([
          ['s1', 'processed'],
          ['s2', 'dead_lettered'],
          ['s3', 'processed'],
        ]);
        expect(rows[1]?.error).toMatch(/TransactionAbortedError: The transaction was rolled back, not committed/);
        // The dead letter waits in the outbox for the relay.
        expect(await count(s.db, s.schema, 'outbox')).toBe(1);
      },
    );
  });

  const smuggled = (trx: Transaction<unknown>) => trx.selectNoFrom(sql<number>`1`.as('one')).modifyEnd(sql`; COMMIT`).execute();
  it.each([
    ['sql`COMMIT`', 'event', (trx: Transaction<unknown>) => sql`COMMIT`.execute(trx)],
    ['ROLLBACK through executeQuery', 'event', (trx: Transaction<unknown>) => trx.executeQuery(CompiledQuery.raw('rollback'))],
    ['END after a comment, through the executor', 'event', (trx: Transaction<unknown>) => trx.getExecutor().executeQuery(CompiledQuery.raw('/* done */ end'))],
    ['COMMIT after another statement in one text', 'event', (trx: Transaction<unknown>) => sql`SELECT 1; COMMIT`.execute(trx)],
    ['COMMIT added to a query builder with modifyEnd', 'event', smuggled],
    ["COMMIT on the executor's connection", 'event', (trx: Transaction<unknown>) => trx.getExecutor().provideConnection((connection) => connection.executeQuery(CompiledQuery.raw('COMMIT')))],
    ['COMMIT added to a query builder with modifyEnd', 'batch', smuggled],
  ] as const)('a handler that ends its transaction itself (%s, %s mode) is refused: the attempt fails, the event is dead-lettered, its earlier write undone', async (_name, mode, end) => {
    await consume(
      `endtx_${mode}`,
      ['c1', 'c2'],
      (schema) => ({
        mode,
        maxAttempts: 2,
        handler: async (event, { trx }) => {
          await apply(trx, schema, event.value);
          if (event.value.amount === 1) await end(trx);
          // A ROLLBACK TO SAVEPOINT is the handler's own business and allowed.
          await sql`SAVEPOINT mine`.execute(trx);
          await sql`ROLLBACK TO SAVEPOINT mine`.execute(trx);
        },
      }),
      (st) => st.processed === 1 && st.deadLettered === 1,
      async (_consumer, s, rows) => {
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 2, applied: 1 } });
        expect(rows.map((r) => [r.event_id, r.status])).toEqual([
          ['c1', 'dead_lettered'],
          ['c2', 'processed'],
        ]);
        expect(rows[0]?.error).toMatch(/TransactionControlRefusedError: Refused "(COMMIT|ROLLBACK|END)" from a handler/);
      },
    );
  });
});
