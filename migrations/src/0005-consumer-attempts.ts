import { sql, type Migration } from 'kysely';

/**
 * Attempt counts of the idempotent consumer that survive rollbacks, crashes and rebalances,
 * written outside the chunk transaction before handlers start:
 * - `consumer_attempts`: one row per event whose handler failed, timed out or was cut short
 *   (its offset and id, attempts started, last error); deleted when the event settles.
 * - `consumer_runs`: per partition, the offsets of the last run of several handlers that was
 *   started; if it never finished, its events are run one per transaction until the cause is
 *   pinned to one event.
 */
export function consumerAttempts(schema: string): Migration {
  return {
    async up(db) {
      const s = db.schema.withSchema(schema);
      await s
        .createTable('consumer_attempts')
        .addColumn('consumer_group', 'text', (c) => c.notNull())
        .addColumn('topic', 'text', (c) => c.notNull())
        .addColumn('partition', 'integer', (c) => c.notNull())
        .addColumn('event_offset', 'bigint', (c) => c.notNull())
        .addColumn('event_id', 'text', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull())
        .addColumn('last_error', 'text')
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('consumer_attempts_pkey', ['consumer_group', 'topic', 'partition', 'event_offset'])
        .execute();
      await s
        .createTable('consumer_runs')
        .addColumn('consumer_group', 'text', (c) => c.notNull())
        .addColumn('topic', 'text', (c) => c.notNull())
        .addColumn('partition', 'integer', (c) => c.notNull())
        .addColumn('first_offset', 'bigint', (c) => c.notNull())
        .addColumn('last_offset', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('consumer_runs_pkey', ['consumer_group', 'topic', 'partition'])
        .execute();
    },
    async down(db) {
      const s = db.schema.withSchema(schema);
      await s.dropTable('consumer_runs').ifExists().execute();
      await s.dropTable('consumer_attempts').ifExists().execute();
    },
  };
}
