import { sql } from 'kysely';
import pino from 'pino';
import { createTestSchema, createTopics, produceMessages, seededRandom, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { startConsumerChild } from './support/child';
import { count, createLedger, handler, makeEvents, model, sameTotals, toMessages, totals, waitFor, type Entry } from './support/ledger';

describe(`a frozen member delays only the partitions it held (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('a member frozen (SIGSTOP) for 45 s inside a writing transaction: the new owner keeps its other partitions flowing, ends the frozen session after takeoverTimeoutMs, effects exact', async () => {
    const s = await createTestSchema(databaseUrl, 'frozen');
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'frozen', partitions: 4 }]);
      const group = uniqueName('g');
      const first = makeEvents(200, seededRandom(61), 'f');
      await produceMessages(kafka, topic as string, toMessages(first));
      const frozenId = 'f150';
      // Postgres would end the frozen transaction itself only after idle_in_transaction_session_timeout
      // (2 × 120 s here): whatever ends it before that is the new owner's takeover.
      const frozen = startConsumerChild({ BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: s.schema, TOPIC: topic as string, GROUP: group, BATCH_SIZE: '20', FREEZE_ON_ID: frozenId, SESSION_TIMEOUT_MS: '6000', STATEMENT_TIMEOUT_MS: '120000' });
      try {
        await frozen.waitForLine(new RegExp(`^inside ${frozenId}$`), 60_000);
        frozen.process.kill('SIGSTOP');
        const frozenAt = Date.now();
        // More events on every partition while the member is frozen.
        const second = makeEvents(200, seededRandom(62), 's');
        await produceMessages(kafka, topic as string, toMessages(second));
        const lines: Array<Record<string, unknown>> = [];
        const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
        const owner = new IdempotentConsumer<Entry>({
          client: testClient(),
          brokers, groupId: group, topics: [topic as string], db: s.db, schema: s.schema, handler: handler(s.schema), logger,
          batchSize: 20, sessionTimeoutMs: 6000, heartbeatIntervalMs: 1000, takeoverTimeoutMs: 5000,
        });
        await owner.start();
        try {
          const expected = model([...first, ...second]);
          // Everything, the frozen member's partition included, is applied while it is still frozen.
          expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 100_000)).toEqual(expected);
          expect(owner.stats.fenced).toBe(0);
          // ...because the new owner ended the frozen session (of the frozen partition, and of any
          // other partition the member had a transaction open in when it was stopped).
          const { rows: held } = await sql<{ partition: number }>`SELECT partition FROM ${sql.id(s.schema, 'processed_events')} WHERE event_id = ${frozenId}`.execute(s.db);
          const ended = lines.filter((l) => String(l['msg']).includes('ended its session'));
          expect(ended.map((l) => l['partition'])).toContain(held[0]?.partition);
          // The other partitions did not wait for the frozen one: their new events were applied first.
          const { rows } = await sql<{ frozen: boolean; first: Date }>`
            SELECT partition = ${held[0]?.partition} AS frozen, min(processed_at) AS first
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
  }, 180_000);
});
