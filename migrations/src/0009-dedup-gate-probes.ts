import { sql, type Migration } from 'kysely';

/**
 * `dedup_claim_gate` (migration 0008) looks up each claimed key in the older live generations
 * with one index probe per key and generation, whatever the planner's statistics say. 0008's
 * body asked `WHERE EXISTS (…) OR (…)` per key, which Postgres may run as a hashed subplan: it
 * then reads every key of the group in every older generation to build a hash table, once per
 * claim. It chose that for partitions filled since their last ANALYZE (600,000 keys in 3 older
 * generations: 800–950 ms a call against 13–25 ms probing). A `LATERAL (… LIMIT 1)` per key
 * cannot be turned into a hash: it is a nested loop whose inner side is the primary key.
 */
export function dedupGateProbes(schema: string): Migration {
  // Identifiers are checked by assertIdentifier (a-z, 0-9, _), so the schema is safe inside a literal.
  const lockKey = `hashtext('effectively.dedup-generations'), hashtext('${schema}')`;
  const gate = (body: string) => sql`
    CREATE OR REPLACE FUNCTION ${sql.id(schema, 'dedup_claim_gate')}(p_group text, p_origins text[], p_ids text[], OUT current_slot integer, OUT seen integer[])
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
      ${body}
    END
    $gate$`)}`;
  return {
    async up(db) {
      await gate(`SELECT coalesce(array_agg(k.n::integer), '{}') INTO seen
        FROM unnest(p_origins, p_ids) WITH ORDINALITY AS k(o, i, n)
        CROSS JOIN LATERAL (
          SELECT 1 FROM "${schema}".processed_event_generations p
            WHERE p.slot = ANY (v_old) AND p.consumer_group = p_group AND p.id_origin = k.o AND p.event_id = k.i
          UNION ALL
          SELECT 1 FROM "${schema}".processed_events p
            WHERE v_legacy AND p.consumer_group = p_group AND p.id_origin = k.o AND p.event_id = k.i
          LIMIT 1) hit;`).execute(db);
    },
    async down(db) {
      await gate(`SELECT coalesce(array_agg(k.n::integer), '{}') INTO seen
        FROM unnest(p_origins, p_ids) WITH ORDINALITY AS k(o, i, n)
        WHERE EXISTS (SELECT 1 FROM "${schema}".processed_event_generations p
                      WHERE p.slot = ANY (v_old) AND p.consumer_group = p_group AND p.id_origin = k.o AND p.event_id = k.i)
           OR (v_legacy AND EXISTS (SELECT 1 FROM "${schema}".processed_events p
                      WHERE p.consumer_group = p_group AND p.id_origin = k.o AND p.event_id = k.i));`).execute(db);
    },
  };
}
