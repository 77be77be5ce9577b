import { sql } from 'kysely';
import { createTestSchema, createTopics, produceMessages, seededRandom, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { startConsumerChild } from './support/child';
import { count, createLedger, handler, makeEvents, model, sameTotals, toMessages, totals, waitFor, type Entry } from './support/ledger';

describe('a frozen member delays only the partitions it held', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('a member frozen (SIGSTOP) for 45 s inside a writing transaction: the new owner keeps its other partitions flowing, takes the frozen one within sessionTimeoutMs + takeoverTimeoutMs, effects exact', async () => {
    const s = await createTestSchema(databaseUrl, 'frozen');
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'frozen', partitions: 4 }]);
      const group = uniqueName('g');
      const first = makeEvents(200, seededRandom(61), 'f');
      await produceMessages(kafka, topic as string, toMessages(first));
      const frozenId = 'f150';
      const frozen = startConsumerChild({ BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: s.schema, TOPIC: topic as string, GROUP: group, BATCH_SIZE: '20', FREEZE_ON_ID: frozenId, SESSION_TIMEOUT_MS: '6000' });
      try {
        await frozen.waitForLine(new RegExp(`^inside ${frozenId}$`), 60_000);
        frozen.process.kill('SIGSTOP');
        const frozenAt = Date.now();
        // More events on every partition while the member is frozen.
        const second = makeEvents(200, seededRandom(62), 's');
        await produceMessages(kafka, topic as string, toMessages(second));
        const owner = new IdempotentConsumer<Entry>({
          brokers, groupId: group, topics: [topic as string], db: s.db, schema: s.schema, handler: handler(s.schema),
          batchSize: 20, sessionTimeoutMs: 6000, heartbeatIntervalMs: 1000, takeoverTimeoutMs: 5000,
        });
        await owner.start();
        try {
          const expected = model([...first, ...second]);
          const done = await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 40_000);
          const tookMs = Date.now() - frozenAt;
          // Everything, the frozen member's partition included, is applied while it is still frozen.
          expect(done).toEqual(expected);
          expect(tookMs).toBeLessThan(40_000);
          expect(owner.stats.fenced).toBe(0);
          // The other partitions did not wait for the frozen one: their new events were applied first.
          const { rows } = await sql<{ frozen: boolean; first: Date }>`
            SELECT partition = (SELECT partition FROM ${sql.id(s.schema, 'processed_events')} WHERE event_id = ${frozenId}) AS frozen, min(processed_at) AS first
            FROM ${sql.id(s.schema, 'processed_events')} WHERE event_id LIKE 's%' GROUP BY 1`.execute(s.db);
          const firstOf = (frozenPartition: boolean) => rows.find((r) => r.frozen === frozenPartition)?.first.getTime() ?? Number.NaN;
          expect(firstOf(false)).toBeLessThan(firstOf(true));
          await sleep(Math.max(0, 45_000 - (Date.now() - frozenAt)));
          frozen.process.kill('SIGCONT');
          await sleep(4000); // the woken member finds its session ended and its partitions gone
          expect(await totals(s.db, s.schema)).toEqual(expected);
          expect(await count(s.db, s.schema, 'processed_events')).toBe(first.length + second.length);
        } finally {
          await owner.stop();
        }
      } finally {
        frozen.process.kill('SIGCONT');
        await frozen.stop();
      }
    } finally {
      await s.drop();
    }
  }, 120_000);
});
