import { sql, type Migration } from 'kysely';

/**
 * `processed_events` gets two columns:
 * - `id_origin`: `producer` for ids the producer sent (header or `fromMessage`), `derived` for
 *   keys the library makes from a record's coordinates (messages without a usable id,
 *   `eventId: { coordinates: true }`). It joins the primary key, (consumer_group, id_origin,
 *   event_id), so no id a producer sends, whatever its bytes, can equal a derived key.
 *   Existing rows keep their meaning: rows the library derived before are recognised by their
 *   exact form (`invalid:<topic>/<partition>/<offset>` dead-lettered as `invalid-event-id`,
 *   or `<topic>/<partition>/<offset>` equal to the row's own coordinates) and marked `derived`;
 *   every other row is a producer id. The one ambiguity: a producer id that spelled out its own
 *   record's coordinates is taken as derived (it still covers that record's redeliveries).
 * - `redrive_id`: the re-drive (dead-letter replay) last applied to a dead-lettered event, so a
 *   deliberate replay applies it once and a copy of the same replay is a duplicate again.
 *
 * Rebuilding the primary key scans and locks the table: prune old rows first on large tables.
 */
export function idOriginAndRedrive(schema: string): Migration {
  const events = sql.id(schema, 'processed_events');
  return {
    async up(db) {
      await sql`ALTER TABLE ${events}
        ADD COLUMN id_origin text NOT NULL DEFAULT 'producer' CONSTRAINT processed_events_id_origin_check CHECK (id_origin IN ('producer', 'derived')),
        ADD COLUMN redrive_id text`.execute(db);
      await sql`UPDATE ${events} SET id_origin = 'derived'
        WHERE event_id = topic || '/' || partition || '/' || kafka_offset
           OR (status = 'dead_lettered' AND error LIKE 'invalid-event-id:%' AND event_id = 'invalid:' || topic || '/' || partition || '/' || kafka_offset)`.execute(db);
      await sql`ALTER TABLE ${events} DROP CONSTRAINT processed_events_pkey,
        ADD CONSTRAINT processed_events_pkey PRIMARY KEY (consumer_group, id_origin, event_id)`.execute(db);
    },
    async down(db) {
      await sql`DELETE FROM ${events} WHERE id_origin = 'derived'
        AND EXISTS (SELECT 1 FROM ${events} p WHERE p.consumer_group = ${events}.consumer_group AND p.event_id = ${events}.event_id AND p.id_origin = 'producer')`.execute(db);
      await sql`ALTER TABLE ${events} DROP CONSTRAINT processed_events_pkey,
        ADD CONSTRAINT processed_events_pkey PRIMARY KEY (consumer_group, event_id)`.execute(db);
      await sql`ALTER TABLE ${events} DROP COLUMN redrive_id, DROP COLUMN id_origin`.execute(db);
    },
  };
}
