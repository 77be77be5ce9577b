import { sql, type Migration } from 'kysely';

/**
 * The idempotent consumer's and the outbox's tables:
 * - `processed_events`: one row per (consumer group, event id), written in the handler's
 *   transaction; its primary key is what makes a second application impossible.
 * - `partition_fences`: the epoch of the member that owns a partition; a transaction whose
 *   member lost the partition (a zombie) sees a newer epoch and is rolled back.
 * - `outbox`: events to publish, written in the same transaction as the effects.
 */
export function consumerAndOutbox(schema: string): Migration {
  return {
    async up(db) {
      const s = db.schema.withSchema(schema);
      await s
        .createTable('processed_events')
        .addColumn('consumer_group', 'text', (c) => c.notNull())
        .addColumn('event_id', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull().check(sql`status IN ('processed', 'dead_lettered')`))
        .addColumn('payload_hash', 'text', (c) => c.notNull())
        .addColumn('topic', 'text', (c) => c.notNull())
        .addColumn('partition', 'integer', (c) => c.notNull())
        .addColumn('kafka_offset', 'bigint', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('error', 'text')
        .addColumn('processed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('processed_events_pkey', ['consumer_group', 'event_id'])
        .execute();
      await s.createIndex('processed_events_processed_at_idx').on('processed_events').column('processed_at').execute();

      await s
        .createTable('partition_fences')
        .addColumn('consumer_group', 'text', (c) => c.notNull())
        .addColumn('topic', 'text', (c) => c.notNull())
        .addColumn('partition', 'integer', (c) => c.notNull())
        .addColumn('epoch', 'bigint', (c) => c.notNull())
        .addColumn('member_id', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addPrimaryKeyConstraint('partition_fences_pkey', ['consumer_group', 'topic', 'partition'])
        .execute();

      await s
        .createTable('outbox')
        .addColumn('id', 'bigserial', (c) => c.primaryKey())
        .addColumn('event_id', 'text', (c) => c.notNull().unique())
        .addColumn('topic', 'text', (c) => c.notNull())
        .addColumn('message_key', 'bytea')
        .addColumn('payload', 'bytea')
        .addColumn('headers', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
        .addColumn('status', 'text', (c) => c.notNull().defaultTo('pending').check(sql`status IN ('pending', 'published', 'parked')`))
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('last_error', 'text')
        .addColumn('available_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('published_at', 'timestamptz')
        .execute();
      await sql`CREATE INDEX outbox_pending_idx ON ${sql.id(schema, 'outbox')} (id) WHERE status = 'pending'`.execute(db);
      await sql`CREATE INDEX outbox_pending_key_idx ON ${sql.id(schema, 'outbox')} (message_key, id) WHERE status = 'pending'`.execute(db);
      await sql`CREATE INDEX outbox_published_at_idx ON ${sql.id(schema, 'outbox')} (published_at) WHERE status = 'published'`.execute(db);
    },
    async down(db) {
      const s = db.schema.withSchema(schema);
      await s.dropTable('outbox').ifExists().execute();
      await s.dropTable('partition_fences').ifExists().execute();
      await s.dropTable('processed_events').ifExists().execute();
    },
  };
}
