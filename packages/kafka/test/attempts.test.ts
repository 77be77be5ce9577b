import { monitorEventLoopDelay } from 'node:perf_hooks';
import { sql, type Kysely } from 'kysely';
import type { Kafka } from 'kafkajs';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer, type ConsumedEvent } from '../src';
import { startConsumerChild } from './support/child';
import { apply, type count, createLedger, totals, waitFor, type Entry } from './support/ledger';

// Every failure reaches a terminal state: time-outs count, counts survive restarts and
// process exits, and retries come at the documented delays.
describe('attempts: counted, persisted, paced', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const entries = (ids: string[]) => ids.map((id, i) => ({ key: 'k', value: JSON.stringify({ account: 'a', amount: i + 1 }), headers: { 'event-id': id } }));
  const status = async (db: Parameters<typeof count>[0], schema: string, id: string): Promise<string | undefined> => {
    const { rows } = await sql<{ status: string }>`SELECT status FROM ${sql.id(schema, 'processed_events')} WHERE event_id = ${id}`.execute(db);
    return rows[0]?.status;
  };

  it('a handler that always exceeds handlerTimeoutMs (maxAttempts 2) is dead-lettered after 2 attempts and the events behind it run', async () => {
    const s = await createTestSchema(databaseUrl, 'tmo');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'tmo', partitions: 1 }]);
      await produceMessages(kafka, topic as string, entries(['slow', 'b1', 'b2']));
      let slowCalls = 0;
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema,
        handlerTimeoutMs: 300, maxAttempts: 2, retryDelayMs: 50,
        handler: async (event, { trx }) => {
          if (event.id === 'slow') {
            slowCalls++;
            await sleep(1000);
          }
          await apply(trx, s.schema, event.value);
        },
      });
      await consumer.start();
      try {
        await waitFor(() => status(s.db, s.schema, 'slow'), (v) => v === 'dead_lettered', 30_000);
        expect(await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 2, 30_000)).toEqual({ a: { total: 5, applied: 2 } });
        expect(slowCalls).toBe(2);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  }, 60_000);

  it('a batch handler that times out is not retried as a batch: its events run one at a time through the handler', async () => {
    const s = await createTestSchema(databaseUrl, 'btmo');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'btmo', partitions: 1 }]);
      await produceMessages(kafka, topic as string, entries(['x1', 'x2', 'x3', 'x4']));
      let batchCalls = 0;
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema,
        handlerTimeoutMs: 300, maxAttempts: 3, retryDelayMs: 50,
        batchHandler: async () => {
          batchCalls++;
          await sleep(1000);
        },
        handler: async (event, { trx }) => apply(trx, s.schema, event.value),
      });
      await consumer.start();
      try {
        expect(await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 4, 30_000)).toEqual({ a: { total: 10, applied: 4 } });
        await sleep(500);
        expect(batchCalls).toBe(1);
        expect(consumer.stats.transientRetries).toBe(0);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  }, 60_000);

  it('attempt counts survive a restart: maxAttempts 3 spent across two consumers, then dead-lettered', async () => {
    const s = await createTestSchema(databaseUrl, 'restart');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'restart', partitions: 1 }]);
      await produceMessages(kafka, topic as string, entries(['poison', 'after']));
      let calls = 0;
      const options = {
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema, maxAttempts: 3, retryDelayMs: 60_000, maxRetryDelayMs: 60_000,
        handler: async (event: ConsumedEvent<Entry>, { trx }: { trx: Parameters<typeof apply>[0] }) => {
          if (event.id === 'poison') {
            calls++;
            throw new Error('poison');
          }
          await apply(trx, s.schema, event.value);
        },
      };
      const first = new IdempotentConsumer<Entry>({ ...options, client: testClient() });
      await first.start();
      await waitFor(async () => calls, (n) => n >= 1, 30_000);
      await first.stop(); // its next retry was a minute away
      const second = new IdempotentConsumer<Entry>({ client: testClient(), ...options, retryDelayMs: 50 });
      await second.start();
      try {
        await waitFor(() => status(s.db, s.schema, 'poison'), (v) => v === 'dead_lettered', 30_000);
        expect(calls).toBe(3);
        expect(await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 1, 30_000)).toEqual({ a: { total: 2, applied: 1 } });
      } finally {
        await second.stop();
      }
    } finally {
      await s.drop();
    }
  }, 60_000);

  it.each(['batch', 'event'])('an event whose handler ends the process (process.exit) maxAttempts times is dead-lettered by the next consumer; the rest are applied once (%s mode)', async (mode) => {
    const s = await createTestSchema(databaseUrl, 'exit');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'exit', partitions: 1 }]);
      await produceMessages(kafka, topic as string, entries(['a1', 'a2', 'killer', 'a3', 'a4']));
      const env = { BROKERS: brokers.join(','), DATABASE_URL: databaseUrl, SCHEMA: s.schema, TOPIC: topic as string, GROUP: uniqueName('g'), BATCH_SIZE: '50', MAX_ATTEMPTS: '3', EXIT_ON_ID: 'killer', MODE: mode, PRINT_ATTEMPTS: '1' };
      const attempts: string[] = [];
      const exits: string[] = [];
      for (let run = 0; run < 6; run++) {
        const child = startConsumerChild(env);
        const ended = await Promise.race([child.exited.then((how) => ({ how })), waitFor(() => status(s.db, s.schema, 'killer'), (v) => v === 'dead_lettered', 60_000).then(() => undefined)]);
        if (ended === undefined) {
          // a3 and a4 are applied after the killer is dead-lettered: let this consumer reach them
          // before stopping it (stopped at once, a loaded machine left a4 unapplied: 3 applied, total 7).
          await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 4, 60_000);
          expect(await child.stop()).toBe('0');
          attempts.push(...child.lines.filter((l) => l.startsWith('attempt a3') || l.startsWith('attempt a4')));
          break;
        }
        expect(ended.how).toBe('3');
        exits.push(child.lines.find((l) => l.startsWith('exiting on')) ?? '');
      }
      expect(exits).toEqual(['exiting on killer attempt 1', 'exiting on killer attempt 2', 'exiting on killer attempt 3']);
      // Per-event mode: the crashed run was counted against the killer only; the events after it never ran and count nothing.
      if (mode === 'event') expect(attempts).toEqual(['attempt a3 1', 'attempt a4 1']);
      expect(await status(s.db, s.schema, 'killer')).toBe('dead_lettered');
      expect(await totals(s.db, s.schema)).toEqual({ a: { total: 1 + 2 + 4 + 5, applied: 4 } });
    } finally {
      await s.drop();
    }
  }, 120_000);

  it('retries come at the documented delays from retryDelayMs (200, 400, 800 ms, ±100 ms), measured from the failure to the next attempt', async () => {
    const s = await createTestSchema(databaseUrl, 'pace');
    try {
      await createLedger(s.db, s.schema);
      // Two partitions, one of them empty: a resumed partition's next fetch competes with a fetch
      // the broker holds for fetchMaxWaitMs (what made retries 5 s apart before).
      const [topic] = await createTopics(kafka, [{ prefix: 'pace', partitions: 2 }]);
      await produceMessages(kafka, topic as string, entries(['flaky']));
      // What the attempts record: the handler's failure (its clock) and the start of the next
      // attempt's transaction (Postgres's now(), same host clock), so the time the attempt
      // spends setting up is not counted.
      const failures: number[] = [];
      const starts: number[] = [];
      // How slow this machine is right now, measured during the run: the consumer's event loop,
      // a Kafka round trip and a Postgres round trip. A retry may be late by at most 100 ms plus
      // that (on a quiet machine a few ms); never early.
      const probe = startLoadProbe(kafka, s.db, topic as string);
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema, maxAttempts: 5, retryDelayMs: 200,
        handler: async (event, { trx }) => {
          const { rows } = await sql<{ ms: number }>`SELECT (extract(epoch FROM now()) * 1000)::float8 AS ms`.execute(trx);
          starts.push((rows[0] as { ms: number }).ms);
          if (starts.length <= 3) {
            failures.push(Date.now());
            throw new Error('not yet');
          }
          await apply(trx, s.schema, event.value);
        },
      });
      await consumer.start();
      try {
        await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 1, 30_000);
      } finally {
        await consumer.stop();
      }
      const load = await probe.stop();
      const gaps = failures.map((f, i) => Math.round((starts[i + 1] as number) - f));
      expect(gaps).toHaveLength(3);
      // Late fetch after a resume (Kafka round trips), late timers (event loop), slow BEGIN (Postgres).
      const slack = load.eventLoopMs + 2 * load.kafkaMs + load.postgresMs;
      [200, 400, 800].forEach((expected, i) => {
        const gap = gaps[i] as number;
        expect({ retry: i + 1, gap, early: gap < expected - 100 }).toEqual({ retry: i + 1, gap, early: false });
        expect({ retry: i + 1, gap, slack, late: gap > expected + 100 + slack }).toEqual({ retry: i + 1, gap, slack, late: false });
      });
    } finally {
      await s.drop();
    }
  }, 60_000);
});

/**
 * Measures, while a test runs, the worst event-loop delay of this process and the slowest Kafka
 * and Postgres round trips (one every 50 ms): what a timing bound may add on a loaded machine.
 */
function startLoadProbe(kafka: Kafka, db: Kysely<unknown>, topic: string): { stop(): Promise<{ eventLoopMs: number; kafkaMs: number; postgresMs: number }> } {
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const admin = kafka.admin();
  let running = true;
  let kafkaMs = 0;
  let postgresMs = 0;
  const timed = async (run: () => Promise<unknown>): Promise<number> => {
    const t = Date.now();
    await run();
    return Date.now() - t;
  };
  const done = (async () => {
    await admin.connect();
    while (running) {
      kafkaMs = Math.max(kafkaMs, await timed(() => admin.fetchTopicOffsets(topic)));
      postgresMs = Math.max(postgresMs, await timed(() => sql`SELECT 1`.execute(db)));
      await new Promise((r) => setTimeout(r, 50));
    }
    await admin.disconnect();
  })();
  return {
    async stop() {
      running = false;
      await done;
      loop.disable();
      return { eventLoopMs: Math.round(loop.max / 1e6), kafkaMs, postgresMs };
    },
  };
}
