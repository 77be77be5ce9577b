import { createDatabase } from '@effectively/core';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { sql } from 'kysely';
import { IdempotentConsumer } from '../src';
import { startConsumerChild } from './support/child';
import { waitFor } from './support/ledger';

/** The application's own tables, as a Kysely user types them. */
interface ShopDatabase {
  orders: { id: string; total: number };
  audit: { event_id: string; source: string };
}

interface OrderPlaced {
  id: string;
  total: number;
  fail?: boolean;
}

describe('the handler context', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  async function setUp(prefix: string) {
    const s = await createTestSchema(databaseUrl, prefix);
    await sql`CREATE TABLE ${sql.id(s.schema, 'orders')} (id text PRIMARY KEY, total integer NOT NULL)`.execute(s.db);
    await sql`CREATE TABLE ${sql.id(s.schema, 'audit')} (event_id text NOT NULL, source text NOT NULL)`.execute(s.db);
    const [topic] = (await createTopics(kafka, [{ prefix, partitions: 1 }])) as [string];
    await produceMessages(kafka, topic, [
      { key: 'a', value: JSON.stringify({ id: 'o1', total: 10 }), headers: { 'event-id': 'e1' } },
      { key: 'b', value: JSON.stringify({ id: 'o2', total: 20, fail: true }), headers: { 'event-id': 'e2' } },
      { key: 'c', value: JSON.stringify({ id: 'o3', total: 30 }), headers: { 'event-id': 'e3' } },
    ]);
    const shop = createDatabase<ShopDatabase>({ connectionString: databaseUrl, max: 4 });
    const audit = async (): Promise<string[]> =>
      (await sql<{ row: string }>`SELECT event_id || ':' || source AS row FROM ${sql.id(s.schema, 'audit')} ORDER BY 1`.execute(s.db)).rows.map((r) => r.row);
    const orders = async (): Promise<string[]> => (await shop.db.withSchema(s.schema).selectFrom('orders').select('id').orderBy('id').execute()).map((r) => r.id);
    return { s, topic, shop, audit, orders };
  }

  it('query(text, values) runs plain SQL in the event transaction: it commits with the claim, and a failing handler rolls it back (per-event mode)', async () => {
    const { s, topic, shop, audit, orders } = await setUp('ctx_query');
    const rowCounts: number[] = [];
    try {
      const consumer = new IdempotentConsumer<OrderPlaced, ShopDatabase>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic], db: shop.db, schema: s.schema,
        mode: 'event', maxAttempts: 1, retryDelayMs: 20,
        handler: async (event, { trx, query }) => {
          // Kysely, typed with the application's own database, and plain SQL, in one transaction.
          await trx.withSchema(s.schema).insertInto('orders').values({ id: event.value.id, total: event.value.total }).execute();
          const inserted = await query(`INSERT INTO "${s.schema}".audit (event_id, source) VALUES ($1, $2)`, [event.id, 'query']);
          rowCounts.push(inserted.rowCount);
          const { rows } = await query<{ n: string }>(`SELECT count(*) AS n FROM "${s.schema}".orders WHERE id = $1`, [event.value.id]);
          expect(rows).toEqual([{ n: '1' }]);
          if (event.value.fail === true) throw new Error('refused after writing');
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed + consumer.stats.deadLettered, (n) => n >= 3, 60_000);
      } finally {
        await consumer.stop();
      }
      expect(consumer.stats).toMatchObject({ processed: 2, deadLettered: 1 });
      expect(rowCounts).toEqual([1, 1, 1]);
      // e2's writes (through query and through trx) were undone with its savepoint.
      expect(await audit()).toEqual(['e1:query', 'e3:query']);
      expect(await orders()).toEqual(['o1', 'o3']);
    } finally {
      await shop.destroy();
      await s.drop();
    }
  });

  it('a batch handler gets query on the chunk transaction; when it throws, its writes are rolled back before the per-event fallback', async () => {
    const { s, topic, shop, audit } = await setUp('ctx_query_batch');
    try {
      const consumer = new IdempotentConsumer<OrderPlaced, ShopDatabase>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic], db: shop.db, schema: s.schema,
        mode: 'batch', batchSize: 10, maxAttempts: 1, retryDelayMs: 20,
        batchHandler: async (events, { query }) => {
          for (const e of events) await query(`INSERT INTO "${s.schema}".audit (event_id, source) VALUES ($1, 'batch')`, [e.id]);
          if (events.some((e) => e.value.fail === true)) throw new Error('one event in the chunk is refused');
        },
        handler: async (event, { query }) => {
          await query(`INSERT INTO "${s.schema}".audit (event_id, source) VALUES ($1, 'event')`, [event.id]);
          if (event.value.fail === true) throw new Error('refused');
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed + consumer.stats.deadLettered, (n) => n >= 3, 60_000);
      } finally {
        await consumer.stop();
      }
      expect(await audit()).toEqual(['e1:event', 'e3:event']);
    } finally {
      await shop.destroy();
      await s.drop();
    }
  });

  it('stopped resolves once stop() has finished, saying no signal stopped it', async () => {
    const s = await createTestSchema(databaseUrl, 'ctx_stopped');
    try {
      const [topic] = (await createTopics(kafka, [{ prefix: 'ctx_stopped', partitions: 1 }])) as [string];
      const consumer = new IdempotentConsumer({ client: testClient(), brokers, groupId: uniqueName('g'), topics: [topic], db: s.db, schema: s.schema, handler: async () => {} });
      let settled = false;
      void consumer.stopped.then(() => (settled = true));
      await consumer.start();
      expect(settled).toBe(false);
      await consumer.stop();
      await expect(consumer.stopped).resolves.toEqual({ signal: undefined });
    } finally {
      await s.drop();
    }
  });

  it('with handleSignals, SIGTERM stops the consumer and the application chains its own shutdown on stopped; the process then exits by itself', async () => {
    const s = await createTestSchema(databaseUrl, 'ctx_sigterm');
    try {
      const [topic] = (await createTopics(kafka, [{ prefix: 'ctx_sigterm', partitions: 1 }])) as [string];
      const child = startConsumerChild({ BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: s.schema, TOPIC: topic, GROUP: uniqueName('g') }, 'shutdown-process.ts');
      await child.waitForLine(/^started$/);
      child.process.kill('SIGTERM');
      // Exit code 0 without process.exit: the consumer, the server and the pool all let go. Waited
      // for, not stop()ped: stop() sends another SIGTERM, which, once the consumer has handled the
      // first and removed its handler, kills the process by default (seen once on a loaded machine).
      expect(await child.exitWithin(30_000, 'the application after one SIGTERM')).toBe('0');
      expect(child.lines).toEqual(expect.arrayContaining(['consumer stopped by SIGTERM', 'application closed']));
    } finally {
      await s.drop();
    }
  });
});
