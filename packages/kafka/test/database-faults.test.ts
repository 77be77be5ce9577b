import { sql } from 'kysely';
import { createDatabase, migrate, type Database } from '@effectively/core';
import { createTestSchema, createTopics, produceMessages, seededRandom, startEmbeddedPostgres, testClient, testKafka, testServices, uniqueName, type LocalPostgres, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { apply, count, createLedger, makeEvents, model, sameTotals, toMessages, totals, waitFor, type Entry } from './support/ledger';

describe('database faults: no loss, no double effect, no restart loop', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('backends killed with pg_terminate_backend mid-transaction, repeatedly', async () => {
    const s: TestSchema = await createTestSchema(databaseUrl, 'term');
    const app = uniqueName('victim');
    const victim = createDatabase({ connectionString: databaseUrl, max: 3, applicationName: app });
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'term', partitions: 2 }]);
      const events = makeEvents(600, seededRandom(5));
      await produceMessages(kafka, topic as string, toMessages(events), { duplicateRate: 0.3, random: seededRandom(6) });
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers,
        groupId: uniqueName('g'),
        topics: [topic as string],
        db: victim.db,
        schema: s.schema,
        batchSize: 30,
        handler: async (event, { trx }) => {
          await apply(trx, s.schema, event.value);
          await sql`SELECT pg_sleep(0.002)`.execute(trx);
        },
      });
      await consumer.start();
      let kills = 0;
      try {
        // Bounded fault loop: terminate the consumer's backends while it works.
        for (let i = 0; i < 15 && consumer.stats.processed < events.length; i++) {
          await new Promise((r) => setTimeout(r, 250));
          const { rows } = await sql<{ killed: boolean }>`
            SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = ${app} AND state <> 'idle'`.execute(s.db);
          kills += rows.filter((r) => r.killed).length;
        }
        const expected = model(events);
        expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 90_000)).toEqual(expected);
        expect(await count(s.db, s.schema, 'processed_events')).toBe(events.length);
        expect(kills).toBeGreaterThan(0);
        expect(consumer.stats.transientRetries).toBeGreaterThan(0);
      } finally {
        await consumer.stop();
      }
    } finally {
      await victim.destroy();
      await s.drop();
    }
  });

  it('Postgres crashes (immediate shutdown) and restarts mid-stream: the consumer waits and recovers', async () => {
    const pg: LocalPostgres = await startEmbeddedPostgres();
    let database: Database | undefined;
    try {
      database = createDatabase({ connectionString: pg.url, max: 4 });
      const schema = 'ledger_app';
      await migrate(database.db, { schema });
      await createLedger(database.db, schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pgcrash', partitions: 2 }]);
      const events = makeEvents(800, seededRandom(8));
      await produceMessages(kafka, topic as string, toMessages(events), { duplicateRate: 0.3, random: seededRandom(9) });
      const db = database.db;
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers,
        groupId: uniqueName('g'),
        topics: [topic as string],
        db,
        schema,
        batchSize: 20,
        handler: async (event, { trx }) => {
          await apply(trx, schema, event.value);
          await sql`SELECT pg_sleep(0.003)`.execute(trx);
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed, (n) => n > 50, 60_000);
        await pg.crash();
        await new Promise((r) => setTimeout(r, 2000));
        await pg.restart();
        const expected = model(events);
        expect(await waitFor(() => totals(db, schema), (t) => sameTotals(t, expected), 120_000)).toEqual(expected);
        expect(await count(db, schema, 'processed_events')).toBe(events.length);
        expect(consumer.stats.transientRetries).toBeGreaterThan(0);
      } finally {
        await consumer.stop();
      }
    } finally {
      await database?.destroy();
      await pg.stop();
    }
  });
});
