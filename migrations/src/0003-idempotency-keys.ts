import { sql, type Migration } from 'kysely';

/**
 * The HTTP idempotency-key store (`@effectively/http`): one row per (scope, key).
 * - `fingerprint` binds the key to the first request (method, route, canonical body hash);
 *   a retry with another fingerprint is refused.
 * - `status` is `in_progress` while a handler runs (under the lease `locked_until`, owned by
 *   `lease_token`) and `completed` once the response is stored in `response_*`.
 * - `expires_at` is when the key may be forgotten; prune deletes expired rows by this index.
 */
export function idempotencyKeys(schema: string): Migration {
  return {
    async up(db) {
      const s = db.schema.withSchema(schema);
      await s
        .createTable('idempotency_keys')
        .addColumn('scope', 'text', (c) => c.notNull())
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('method', 'text', (c) => c.notNull())
        .addColumn('route', 'text', (c) => c.notNull())
        .addColumn('fingerprint', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull().check(sql`status IN ('in_progress', 'completed')`))
        .addColumn('lease_token', 'text', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('locked_until', 'timestamptz')
        .addColumn('response_status', 'integer')
        .addColumn('response_headers', 'jsonb')
        .addColumn('response_body', 'bytea')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('completed_at', 'timestamptz')
        .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
        .addPrimaryKeyConstraint('idempotency_keys_pkey', ['scope', 'key'])
        .addCheckConstraint(
          'idempotency_keys_completed_has_response',
          sql`status <> 'completed' OR (response_status IS NOT NULL AND response_headers IS NOT NULL AND response_body IS NOT NULL)`,
        )
        .addCheckConstraint('idempotency_keys_in_progress_has_lease', sql`status <> 'in_progress' OR locked_until IS NOT NULL`)
        .execute();
      await s.createIndex('idempotency_keys_expires_at_idx').on('idempotency_keys').column('expires_at').execute();
    },
    async down(db) {
      await db.schema.withSchema(schema).dropTable('idempotency_keys').ifExists().execute();
    },
  };
}
