import { Kysely, PostgresDialect, sql } from 'kysely';
import { Pool } from 'pg';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { apply, count, createLedger, totals, waitFor, type Entry } from './support/ledger';

// Per-event mode runs each event alone in its transaction, without a savepoint except on the
// attempt whose failure is dead-lettered; the fence is a share lock on the partition's fence row.
describe('per-event mode: failures and the fence lock', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const entry = (id: string, amount: number) => ({ key: 'k', value: JSON.stringify({ account: 'a', amount }), headers: { 'event-id': id } });

  it('a new event costs 2 round trips (the claim with BEGIN and the previous event\'s COMMIT, the handler\'s statement), a duplicate 1; the last of a fetched batch commits alone; the attempt is recorded once per fetched batch, before the first handler', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_trips');
    const statements: string[] = [];
    // What each statement is (its text read as a string, as a Kysely log function would).
    const kind = (text: string): string => {
      if (text.includes('processed_events') && text.includes('INSERT INTO')) return text.startsWith('COMMIT; ') ? 'COMMIT+CLAIM' : 'CLAIM';
      if (text.includes('consumer_attempts')) return 'ATTEMPTS';
      return text.trim().split(/\s+/)[0]?.toUpperCase() ?? '';
    };
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new Pool({ connectionString: databaseUrl, max: 2 }) }), log: (e) => void statements.push(kind(e.query.sql)) });
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_trips', partitions: 1 }]);
      await produceMessages(kafka, topic as string, [entry('t1', 1), entry('t2', 2), entry('t1', 1)]);
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db, schema: s.schema, mode: 'event',
        handler: async (event, { trx }) => {
          // The claim began the transaction: the handler runs inside it.
          const { rows } = await sql<{ open: boolean }>`SELECT now() = statement_timestamp() AS open`.execute(trx);
          if (rows[0]?.open !== false) throw new Error('the handler is not inside a transaction begun before its statement');
          await apply(trx, s.schema, event.value);
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed + consumer.stats.duplicates, (n) => n === 3, 30_000);
      } finally {
        await consumer.stop();
      }
      // Each round trip from the first claim to the last COMMIT: one fetched batch of three events.
      const first = statements.indexOf('CLAIM');
      const last = statements.lastIndexOf('COMMIT');
      // The run (the rest of the fetched batch) is recorded after the first claim (which reads the partition's attempt record) and before the first handler starts, outside the transaction, so a process that dies in a handler still counts it.
      // Each event's COMMIT travels with the next event's BEGIN and claim; the duplicate's transaction (nothing claimed) commits with the last claim.
      expect(statements.slice(first, last + 1)).toEqual(['CLAIM', 'ATTEMPTS', 'SELECT', 'INSERT', 'COMMIT+CLAIM', 'SELECT', 'INSERT', 'COMMIT+CLAIM', 'COMMIT']);
      expect(statements).not.toContain('BEGIN');
      expect(await totals(s.db, s.schema)).toEqual({ a: { total: 3, applied: 2 } });
    } finally {
      await db.destroy();
      await s.drop();
    }
  });

  it('the claim is a named prepared statement (its name a hash of its SQL text, which names the schema), prepared once per connection; preparedStatements: false prepares none', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_prepared');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_prepared', partitions: 1 }]);
      await produceMessages(kafka, topic as string, [entry('n1', 1), entry('n2', 2), entry('n1', 1), entry('n3', 3)]);
      const run = async (preparedStatements: boolean) => {
        // What the handler's own connection (the chunk transaction's) has prepared.
        const seen: Array<Array<{ name: string; statement: string }>> = [];
        // A pool of its own: connections where nothing was prepared yet.
        const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new Pool({ connectionString: databaseUrl, max: 2 }) }) });
        const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
          brokers, groupId: uniqueName('g'), topics: [topic as string], db, schema: s.schema, mode: 'event', preparedStatements,
          handler: async (event, { trx }) => {
            const { rows } = await sql<{ name: string; statement: string }>`SELECT name, statement FROM pg_prepared_statements WHERE name LIKE 'effectively\_%' ORDER BY name`.execute(trx);
            seen.push(rows);
            await apply(trx, s.schema, event.value);
          },
        });
        await consumer.start();
        try {
          await waitFor(async () => consumer.stats.processed + consumer.stats.duplicates, (n) => n === 4, 30_000);
        } finally {
          await consumer.stop();
          await db.destroy();
        }
        return seen;
      };
      const named = await run(true);
      expect(named).toHaveLength(3);
      for (const rows of named) {
        expect(rows).toHaveLength(1);
        expect(rows[0]?.name).toMatch(/^effectively_[0-9a-f]{40}$/);
        expect(rows[0]?.statement).toContain(`"${s.schema}"."processed_events"`);
      }
      expect(new Set(named.map((rows) => rows[0]?.name)).size).toBe(1);
      // A second group on new connections: with preparedStatements off, nothing of the consumer's is prepared on them.
      const unnamed = await run(false);
      expect(unnamed).toEqual([[], [], []]);
      // Each group applied each event once.
      expect(await totals(s.db, s.schema)).toEqual({ a: { total: 12, applied: 6 } });
    } finally {
      await s.drop();
    }
  });

  it('a later copy with another payload is a conflicting duplicate (the stored hash read by the claim statement): skipped, dead-lettered once; an equal copy is a plain duplicate', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_conflict');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_conflict', partitions: 1 }]);
      await produceMessages(kafka, topic as string, [entry('c1', 1), entry('c1', 5), entry('c1', 1), entry('c2', 2)]);
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema, mode: 'event', onConflict: 'dead-letter',
        handler: async (event, { trx }) => apply(trx, s.schema, event.value),
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed + consumer.stats.duplicates, (n) => n >= 4, 30_000);
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 3, applied: 2 } });
        expect(consumer.stats.conflicts).toBe(1);
        expect(await count(s.db, s.schema, 'outbox', sql`headers->>'dlq-reason' = 'conflicting-duplicate'`)).toBe(1);
        expect(await count(s.db, s.schema, 'processed_events')).toBe(2);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });

  it('4 partitions in flight, their attempt records written together: each event is counted on its own partition (a failed first attempt makes the retry attempt 2, nothing else counts twice)', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_parts');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_parts', partitions: 4 }]);
      const messages = Array.from({ length: 24 }, (_, i) => ({ ...entry(`p${i}`, i + 1), key: `k${i % 4}`, partition: i % 4 }));
      await produceMessages(kafka, topic as string, messages);
      const seen = new Map<string, number[]>();
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema, mode: 'event',
        partitionsConsumedConcurrently: 4, maxAttempts: 5, retryDelayMs: 20, maxRetryDelayMs: 100,
        handler: async (event, { trx, attempt }) => {
          seen.set(event.id, [...(seen.get(event.id) ?? []), attempt]);
          // Every fourth event fails its first attempt.
          if (event.value.amount % 4 === 1 && attempt === 1) throw new Error('first attempt fails');
          await apply(trx, s.schema, event.value);
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed, (n) => n === 24, 60_000);
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: (24 * 25) / 2, applied: 24 } });
        for (let i = 0; i < 24; i++) expect({ id: `p${i}`, attempts: seen.get(`p${i}`) }).toEqual({ id: `p${i}`, attempts: (i + 1) % 4 === 1 ? [1, 2] : [1] });
        expect(consumer.stats.handlerRetries).toBe(6);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });

  it('a handler that fails after writing is retried with its writes undone, and applied once when it succeeds', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_retry');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_retry', partitions: 1 }]);
      await produceMessages(kafka, topic as string, [entry('r1', 1), entry('r2', 2), entry('r2', 2), entry('r3', 3)]);
      const calls = new Map<number, number>();
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema,
        mode: 'event', maxAttempts: 5, retryDelayMs: 20, maxRetryDelayMs: 100,
        handler: async (event, { trx, attempt }) => {
          calls.set(event.value.amount, (calls.get(event.value.amount) ?? 0) + 1);
          await apply(trx, s.schema, event.value);
          if (event.value.amount === 2 && attempt < 3) throw new Error('not yet');
        },
      });
      await consumer.start();
      try {
        await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 3, 30_000);
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 6, applied: 3 } });
        expect(calls.get(2)).toBe(3);
        expect(consumer.stats.handlerRetries).toBe(2);
        expect(await count(s.db, s.schema, 'processed_events')).toBe(3);
        expect(await count(s.db, s.schema, 'outbox')).toBe(0);
        await waitFor(async () => consumer.stats.duplicates, (n) => n === 1, 30_000);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });

  it('a handler that always fails is dead-lettered on its last attempt with its writes undone; later events flow', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_dlq');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_dlq', partitions: 1 }]);
      await produceMessages(kafka, topic as string, [entry('d1', 1), entry('d2', 2), entry('d3', 3)]);
      let attemptsOfPoison = 0;
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema,
        mode: 'event', maxAttempts: 3, retryDelayMs: 20, maxRetryDelayMs: 100,
        handler: async (event, { trx }) => {
          await apply(trx, s.schema, event.value);
          if (event.value.amount === 2) {
            attemptsOfPoison++;
            throw new Error('poison');
          }
        },
      });
      await consumer.start();
      try {
        await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 2, 30_000);
        await waitFor(async () => consumer.stats.deadLettered, (n) => n === 1, 30_000);
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 4, applied: 2 } });
        expect(attemptsOfPoison).toBe(3);
        const { rows } = await sql<{ status: string; attempts: number; error: string }>`
          SELECT status, attempts, error FROM ${sql.id(s.schema, 'processed_events')} WHERE event_id = 'd2'`.execute(s.db);
        expect(rows).toEqual([{ status: 'dead_lettered', attempts: 3, error: 'Error: poison' }]);
        expect(await count(s.db, s.schema, 'outbox', sql`topic = ${`${topic as string}.dlq`}`)).toBe(1);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });

  it('a claim made while an epoch bump is in flight: the fence lock re-checks the newest epoch, so that transaction is fenced and commits nothing', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_fence_race');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_fence_race', partitions: 1 }]);
      await produceMessages(kafka, topic as string, [entry('g1', 1)]);
      const handled: number[] = [];
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema, mode: 'event',
        // Generous bounds: the claim statement must still be waiting when the bump commits, however loaded the machine.
        lockTimeoutMs: 600_000, statementTimeoutMs: 600_000,
        handler: async (event, { trx }) => {
          handled.push(event.value.amount);
          await apply(trx, s.schema, event.value);
        },
      });
      await consumer.start();
      let commitBump: () => void = () => undefined;
      const bumpMayCommit = new Promise<void>((r) => (commitBump = r));
      try {
        await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 1, 30_000);
        // A takeover that has bumped the epoch but not committed yet.
        let bumped: () => void = () => undefined;
        const bumpedYet = new Promise<void>((r) => (bumped = r));
        const bump = s.db.transaction().execute(async (trx) => {
          await sql`UPDATE ${sql.id(s.schema, 'partition_fences')} SET epoch = epoch + 1, member_id = 'newer-owner'`.execute(trx);
          bumped();
          await bumpMayCommit;
        });
        await bumpedYet;
        // g2's claim reads the old epoch in its snapshot, claims, then waits on the fence row lock.
        await produceMessages(kafka, topic as string, [entry('g2', 2)]);
        const waiting = async (): Promise<number> =>
          Number((await sql<{ n: string }>`SELECT count(*) AS n FROM pg_stat_activity
            WHERE wait_event_type = 'Lock' AND query LIKE ${`%${s.schema}%partition_fences%`}`.execute(s.db)).rows[0]?.n ?? 0);
        expect(await waitFor(waiting, (n) => n > 0, 60_000)).toBe(1);
        commitBump();
        await bump;
        await waitFor(async () => consumer.stats.fenced, (n) => n > 0, 60_000);
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 1, applied: 1 } });
        expect(await count(s.db, s.schema, 'processed_events')).toBe(1);
        expect(handled).toEqual([1]);
      } finally {
        commitBump();
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });

  it('an epoch bump waits for the open transaction that checked the fence; that transaction commits, the next one is fenced', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_fence');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_fence', partitions: 1 }]);
      await produceMessages(kafka, topic as string, [entry('f1', 1)]);
      let release: () => void = () => undefined;
      const gate = new Promise<void>((r) => (release = r));
      let entered = false;
      const consumer = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId: uniqueName('g'), topics: [topic as string], db: s.db, schema: s.schema, mode: 'event',
        handler: async (event, { trx }) => {
          if (event.value.amount === 1) {
            entered = true;
            await gate;
          }
          await apply(trx, s.schema, event.value);
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => entered, (e) => e, 30_000);
        const fences = sql.id(s.schema, 'partition_fences');
        // The takeover's UPDATE conflicts with the share lock the open transaction holds on the fence row.
        const bump = s.db.transaction().execute(async (trx) => {
          await sql`SET LOCAL lock_timeout = '300ms'`.execute(trx);
          await sql`UPDATE ${fences} SET epoch = epoch + 1, member_id = 'newer-owner'`.execute(trx);
        });
        await expect(bump).rejects.toMatchObject({ code: '55P03' });
        // Now take over for real (waiting for the lock), then let the open transaction finish.
        const takeover = sql`UPDATE ${fences} SET epoch = epoch + 1, member_id = 'newer-owner'`.execute(s.db);
        release();
        await takeover;
        // f2 arrives after the takeover committed. (Sent earlier, its transaction could take the
        // share lock between f1's commit and the waiting UPDATE, which share locks may overtake,
        // and commit before the takeover: allowed, but not what this test is about.)
        await produceMessages(kafka, topic as string, [entry('f2', 2)]);
        await waitFor(async () => consumer.stats.fenced, (n) => n > 0, 30_000);
        // f1's transaction checked the fence before the takeover and committed; f2 was fenced.
        expect(await totals(s.db, s.schema)).toEqual({ a: { total: 1, applied: 1 } });
        expect(await count(s.db, s.schema, 'processed_events')).toBe(1);
      } finally {
        release();
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });

  it('a claim made ahead (with the previous COMMIT) for a message the consumer then does not run is rolled back and its connection handed back: stopped after the first event, restarted, every event applied once', async () => {
    const s = await createTestSchema(databaseUrl, 'pe_ahead');
    const pool = new Pool({ connectionString: databaseUrl, max: 2, application_name: `pe-ahead-${s.schema}` });
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: 'pe_ahead', partitions: 1 }]);
      await produceMessages(kafka, topic as string, [entry('h1', 1), entry('h2', 2), entry('h3', 4)]);
      const groupId = uniqueName('g');
      let entered = false;
      let release: () => void = () => undefined;
      const gate = new Promise<void>((r) => (release = r));
      const first = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId, topics: [topic as string], db, schema: s.schema, mode: 'event',
        handler: async (event, { trx }) => apply(trx, s.schema, event.value),
        // After h1 committed (h2 claimed ahead in the same round trip, its transaction open): wait until stop() was called.
        hooks: {
          afterDbCommit: async () => {
            entered = true;
            await gate;
          },
        },
      });
      await first.start();
      await waitFor(async () => entered, (e) => e, 30_000);
      const sessions = async (state: string): Promise<number> =>
        Number((await sql<{ n: string }>`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = ${`pe-ahead-${s.schema}`} AND state = ${state}`.execute(s.db)).rows[0]?.n);
      // h2's transaction, begun with h1's COMMIT, is open on the partition's connection.
      expect(await sessions('idle in transaction')).toBe(1);
      const stopping = first.stop();
      release();
      await stopping;
      expect(first.stats.processed).toBe(1);
      // h2's claim was rolled back: only h1 is recorded, and no session of the pool is left in a transaction.
      expect(await count(s.db, s.schema, 'processed_events')).toBe(1);
      expect(pool.totalCount).toBe(pool.idleCount);
      expect(await sessions('idle in transaction')).toBe(0);

      const second = new IdempotentConsumer<Entry>({ client: testClient(),
        brokers, groupId, topics: [topic as string], db, schema: s.schema, mode: 'event',
        handler: async (event, { trx }) => apply(trx, s.schema, event.value),
      });
      await second.start();
      try {
        await waitFor(() => totals(s.db, s.schema), (t) => t.a?.applied === 3, 30_000);
      } finally {
        await second.stop();
      }
      expect(await totals(s.db, s.schema)).toEqual({ a: { total: 7, applied: 3 } });
      expect(await count(s.db, s.schema, 'processed_events')).toBe(3);
      expect(pool.totalCount).toBe(pool.idleCount);
    } finally {
      await db.destroy();
      await s.drop();
    }
  });
});
