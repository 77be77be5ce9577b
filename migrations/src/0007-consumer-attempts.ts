import { sql, type Migration } from 'kysely';

/**
 * `consumer_attempts`: the idempotent consumer's attempt counts that survive rollbacks, crashes
 * and rebalances, one row per (group, topic, partition), written outside the chunk transaction
 * before handlers start:
 * - `event_offset`, `event_id`, `attempts`, `last_error`: the partition's first unsettled event
 *   that a handler failed on, timed out on, or ran alone in its transaction, and how many times;
 * - `run_first`, `run_last`: the offsets of the last started run of several handlers; if it
 *   never finished, its events run one per transaction until the cause is pinned to one event.
 */
export function consumerAttempts(schema: string): Migration {
  return {
    async up(db) {
      await db.schema
        .withSchema(schema)
        .createTable('consumer_attempts')
        .addColumn('consumer_group', 'text', (c) => c.notNull())
        .addColumn('topic', 'text', (c) => c.notNull())
        .addColumn('partition', 'integer', (c) => c.notNull())
        .addColumn('run_first', 'bigint')
        .addColumn('run_last', 'bigint')
        .addColumn('event_offset', 'bigint')
        .addColumn('event_id', 'text')
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('last_error', 'text')
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('consumer_attempts_pkey', ['consumer_group', 'topic', 'partition'])
        .execute();
    },
    async down(db) {
      await db.schema.withSchema(schema).dropTable('consumer_attempts').ifExists().execute();
    },
  };
}
