import { Kysely, PostgresDialect, sql } from 'kysely';
import { Pool, Query } from 'pg';
import { createTestSchema, createTopics, produceMessages, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { apply, createLedger, totals, waitFor, type Entry } from './support/ledger';

// Per-event mode folds BEGIN into the claim's round trip through node-postgres `Query` internals
// that pg does not promise. Where they are not what the fold needs, BEGIN must be sent on its own:
// a claim sent without its BEGIN would commit alone, and the handler's effects apart from it.
// Simulated here as a pg whose `submit` no longer goes through the query's own `prepare` (the
// method the fold replaces on its query object to put BEGIN first); jest gives this file its own pg.
describe('per-event mode with a node-postgres whose internals the BEGIN fold does not know', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const proto = Query.prototype as unknown as { submit: (this: object, connection: unknown) => unknown };
  const submit = proto.submit;
  beforeAll(() => {
    proto.submit = function (this: object, connection: unknown) {
      if (Object.prototype.hasOwnProperty.call(this, 'prepare')) delete (this as { prepare?: unknown }).prepare;
      return submit.call(this, connection);
    };
  });
  afterAll(() => void (proto.submit = submit));

  it('sends BEGIN on its own: the handler runs inside the transaction, a failed attempt leaves no claim, effects exact', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_nofold');
    const statements: string[] = [];
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new Pool({ connectionString: databaseUrl, max: 3 }) }), log: (e) => void statements.push(e.query.sql.trim().split(/\s+/)[0]?.toUpperCase() ?? '') });
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_nofold', partitions: 1 }]);
      const entry = (id: string, amount: number) => ({ key: 'k', value: JSON.stringify({ account: 'a', amount }), headers: { 'event-id': id } });
      await produceMessages(kafka, topic as string, [entry('f1', 1), entry('f2', 2), entry('f1', 1), entry('f3', 4)]);
      let failOnce = true;
      const consumer = new IdempotentConsumer<Entry>({
        brokers, groupId: uniqueName('g'), topics: [topic as string], db, schema: s.schema, mode: 'event', retryDelayMs: 50,
        handler: async (event, { trx }) => {
          const { rows } = await sql<{ open: boolean }>`SELECT now() = statement_timestamp() AS open`.execute(trx);
          if (rows[0]?.open !== false) throw new Error('the handler is not inside a transaction begun before its statement');
          await apply(trx, s.schema, event.value);
          if (event.id === 'f2' && failOnce) {
            failOnce = false;
            throw new Error('first attempt of f2 fails after its write');
          }
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed + consumer.stats.duplicates, (n) => n === 4, 30_000);
      } finally {
        await consumer.stop();
      }
      expect(statements).toContain('BEGIN');
      // f2's failed attempt rolled back its write and its claim: applied once, by the retry.
      expect(await totals(s.db, s.schema)).toEqual({ a: { total: 7, applied: 3 } });
    } finally {
      await db.destroy();
      await s.drop();
    }
  });
});
