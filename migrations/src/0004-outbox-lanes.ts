import { sql, type Migration } from 'kysely';

/** How many ordering lanes the outbox has. Fixed by this migration; see `outbox_lane`. */
export const OUTBOX_LANES = 64;

/**
 * Ordering lanes for the outbox relay, and the relay's leases:
 * - `outbox_lane(key, event_id)`: the lane of a row, a hash of its Kafka key into
 *   {@link OUTBOX_LANES} lanes (a keyless row hashes its event id: it has no order to keep).
 *   `outbox.lane` is a stored column generated from it, so every writer agrees, whatever its
 *   language. Writers take `pg_advisory_xact_lock(hashtext('effectively.outbox:' || schema), lane)`
 *   before inserting, so within a lane ids are assigned in commit order.
 * - `outbox_lanes`: one row per lane, leased by at most one relay (`owner`, `lease_until`,
 *   `epoch`). A relay publishes a lane only inside a transaction that holds its row lock, so
 *   two relays never publish the same lane at once, and a relay that dies loses its lanes when
 *   its lease runs out.
 * - `outbox_relays`: live relays and their heartbeats, to share lanes out evenly.
 * - Indexes: pending rows in id order (the relay's scan), and the few rows that can block a key
 *   (backing off or parked).
 */
export function outboxLanes(schema: string): Migration {
  const outbox = sql.id(schema, 'outbox');
  const laneFn = sql.id(schema, 'outbox_lane');
  return {
    async up(db) {
      // A constant body, dollar-quoted: kysely 0.27's sql.lit does not escape the quotes inside.
      await sql`
        CREATE FUNCTION ${laneFn}(message_key bytea, event_id text) RETURNS integer
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS ${sql.raw(`$lane$ SELECT (hashtextextended(COALESCE('k:' || encode(message_key, 'hex'), 'e:' || event_id), 0) & ${OUTBOX_LANES - 1})::integer $lane$`)}`.execute(db);
      await sql`ALTER TABLE ${outbox} ADD COLUMN lane integer GENERATED ALWAYS AS (${laneFn}(message_key, event_id)) STORED`.execute(db);
      await sql`DROP INDEX IF EXISTS ${sql.id(schema, 'outbox_pending_key_idx')}`.execute(db);
      await sql`CREATE INDEX outbox_blocking_idx ON ${outbox} (lane, topic, message_key, id) WHERE status = 'parked' OR (status = 'pending' AND attempts > 0)`.execute(db);

      const s = db.schema.withSchema(schema);
      await s
        .createTable('outbox_lanes')
        .addColumn('lane', 'integer', (c) => c.primaryKey())
        .addColumn('owner', 'text')
        .addColumn('lease_until', 'timestamptz', (c) => c.notNull().defaultTo(sql`'-infinity'`))
        .addColumn('epoch', 'bigint', (c) => c.notNull().defaultTo(0))
        .execute();
      await sql`INSERT INTO ${sql.id(schema, 'outbox_lanes')} (lane) SELECT generate_series(0, ${sql.lit(OUTBOX_LANES - 1)})`.execute(db);
      await s
        .createTable('outbox_relays')
        .addColumn('relay_id', 'text', (c) => c.primaryKey())
        .addColumn('heartbeat_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute();
    },
    async down(db) {
      const s = db.schema.withSchema(schema);
      await s.dropTable('outbox_relays').ifExists().execute();
      await s.dropTable('outbox_lanes').ifExists().execute();
      await sql`DROP INDEX IF EXISTS ${sql.id(schema, 'outbox_blocking_idx')}`.execute(db);
      await sql`ALTER TABLE ${outbox} DROP COLUMN IF EXISTS lane`.execute(db);
      await sql`DROP FUNCTION IF EXISTS ${laneFn}(bytea, text)`.execute(db);
      await sql`CREATE INDEX IF NOT EXISTS outbox_pending_key_idx ON ${outbox} (message_key, id) WHERE status = 'pending'`.execute(db);
    },
  };
}
