import { sql, type Migration } from 'kysely';

/**
 * Retention by generations (opt-in; nothing changes until `enableGenerations` runs):
 * - `processed_event_generations`: the dedup records once generations are enabled, partitioned
 *   by `slot` (LIST); a ring of slots, each holding one generation (a time slice). Its key is
 *   (consumer_group, id_origin, event_id, slot): unique within a slot; across slots the claim
 *   checks the live ones (see `dedup_claim_gate`).
 * - `dedup_generations`: one row per slot: the generation it holds (NULL = empty), when it
 *   became current and when it stopped being current.
 * - `dedup_retention`: one row: whether generations are on, the window and rotation interval,
 *   the current slot and generation, and when the legacy `processed_events` stopped taking
 *   claims (`legacy_ended_at`) and was emptied (`legacy_forgotten_at`).
 * - `dedup_claim_gate(group, origins, ids)`: called by every claim statement once generations
 *   are on. It takes a SHARED transaction-level advisory lock (rotation takes it EXCLUSIVELY),
 *   then, in fresh snapshots taken after the lock (a VOLATILE function), reads the current slot
 *   and which of the keys a live non-current slot or the legacy table already holds. So a claim
 *   never straddles a switch, and sees every claim committed in an older generation.
 * - `dedup_legacy_closed()`: the trigger function `enableGenerations` puts on the legacy table,
 *   so a consumer still claiming there fails (SQLSTATE EF001) instead of writing where claims
 *   no longer look.
 */
export function dedupGenerations(schema: string): Migration {
  const t = (name: string) => sql.id(schema, name);
  // Identifiers are checked by assertIdentifier (a-z, 0-9, _), so the schema is safe inside a literal.
  const lockKey = `hashtext('effectively.dedup-generations'), hashtext('${schema}')`;
  return {
    async up(db) {
      await sql`CREATE TABLE ${t('processed_event_generations')} (
        consumer_group text NOT NULL,
        id_origin text NOT NULL DEFAULT 'producer' CHECK (id_origin IN ('producer', 'derived')),
        event_id text NOT NULL,
        status text NOT NULL CHECK (status IN ('processed', 'dead_lettered')),
        payload_hash text NOT NULL,
        topic text NOT NULL,
        partition integer NOT NULL,
        kafka_offset bigint NOT NULL,
        attempts integer NOT NULL DEFAULT 1,
        error text,
        processed_at timestamptz NOT NULL DEFAULT now(),
        redrive_id text,
        slot integer NOT NULL,
        CONSTRAINT processed_event_generations_pkey PRIMARY KEY (consumer_group, id_origin, event_id, slot)
      ) PARTITION BY LIST (slot)`.execute(db);
      await sql`CREATE INDEX processed_event_generations_processed_at_idx ON ${t('processed_event_generations')} (processed_at)`.execute(db);
      await sql`CREATE TABLE ${t('dedup_generations')} (
        slot integer PRIMARY KEY,
        generation bigint,
        started_at timestamptz,
        ended_at timestamptz,
        forgotten_at timestamptz
      )`.execute(db);
      await sql`CREATE TABLE ${t('dedup_retention')} (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        enabled boolean NOT NULL DEFAULT false,
        window_ms bigint,
        interval_ms bigint,
        current_slot integer,
        current_generation bigint,
        enabled_at timestamptz,
        rotated_at timestamptz,
        legacy_ended_at timestamptz,
        legacy_forgotten_at timestamptz
      )`.execute(db);
      await sql`INSERT INTO ${t('dedup_retention')} (id) VALUES (true)`.execute(db);
      await sql`
        CREATE FUNCTION ${t('dedup_claim_gate')}(p_group text, p_origins text[], p_ids text[], OUT current_slot integer, OUT seen integer[])
        LANGUAGE plpgsql VOLATILE
        AS ${sql.raw(`$gate$
        DECLARE
          v_old integer[];
          v_legacy boolean;
        BEGIN
          PERFORM pg_advisory_xact_lock_shared(${lockKey});
          SELECT r.current_slot, r.legacy_ended_at IS NOT NULL AND r.legacy_forgotten_at IS NULL INTO current_slot, v_legacy
            FROM "${schema}".dedup_retention r WHERE r.enabled;
          IF current_slot IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'EF002', MESSAGE = 'effectively: dedup generations are not enabled in schema ${schema}; run enableGenerations (effectively retention enable) first';
          END IF;
          SELECT coalesce(array_agg(g.slot), '{}') INTO v_old FROM "${schema}".dedup_generations g
            WHERE g.generation IS NOT NULL AND g.slot <> current_slot;
          SELECT coalesce(array_agg(k.n::integer), '{}') INTO seen
            FROM unnest(p_origins, p_ids) WITH ORDINALITY AS k(o, i, n)
            WHERE EXISTS (SELECT 1 FROM "${schema}".processed_event_generations p
                          WHERE p.slot = ANY (v_old) AND p.consumer_group = p_group AND p.id_origin = k.o AND p.event_id = k.i)
               OR (v_legacy AND EXISTS (SELECT 1 FROM "${schema}".processed_events p
                          WHERE p.consumer_group = p_group AND p.id_origin = k.o AND p.event_id = k.i));
        END
        $gate$`)}`.execute(db);
      await sql`
        CREATE FUNCTION ${t('dedup_legacy_closed')}() RETURNS trigger
        LANGUAGE plpgsql
        AS ${sql.raw(`$closed$
        BEGIN
          RAISE EXCEPTION USING ERRCODE = 'EF001', MESSAGE = 'effectively: dedup generations are enabled in schema ${schema}; processed_events takes no new claims (restart this consumer with a version that supports generations)';
        END
        $closed$`)}`.execute(db);
    },
    async down(db) {
      await sql`DROP TRIGGER IF EXISTS processed_events_closed ON ${t('processed_events')}`.execute(db);
      await sql`DROP FUNCTION IF EXISTS ${t('dedup_legacy_closed')}()`.execute(db);
      await sql`DROP FUNCTION IF EXISTS ${t('dedup_claim_gate')}(text, text[], text[])`.execute(db);
      await sql`DROP TABLE IF EXISTS ${t('dedup_retention')}, ${t('dedup_generations')}, ${t('processed_event_generations')}`.execute(db);
    },
  };
}
