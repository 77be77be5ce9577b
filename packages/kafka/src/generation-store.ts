import { sql, type Transaction, type Kysely } from 'kysely';
import { idKey } from './classify';
import type { IdOrigin } from './event-id';
import { CompiledOnce } from './prepared';
import { claimArguments, claimGuards, markDeadLetteredIn, ProcessedEventStore, redriveIn, releaseIn, restoreIn, type ClaimArguments, type EventKey, type OpenOptions, type OpenResult, type Redriven, type StoredEvent } from './store';

type Db = Kysely<unknown> | Transaction<unknown>;

/** The values of {@link GenerationStore.open}'s statement, in order. */
type ClaimArgs = [...ClaimArguments, unknown, unknown];

/**
 * The claim path once retention by generations is on (migration 0008, `enableGenerations`):
 * records go to `processed_event_generations`, in the current generation's slot; the
 * pre-generations `processed_events` is only read (until a rotation empties it). Every claim
 * statement first calls `dedup_claim_gate`, which holds the generations' advisory lock shared
 * until the transaction ends (a rotation's switch holds it exclusively: no claim straddles a
 * switch) and, in a snapshot taken after that lock, names the keys an older live generation or
 * the legacy table already holds; those are not inserted. Within the current slot the primary
 * key (with ON CONFLICT) decides, as without generations. So a key is recorded at most once
 * across the live generations. The statement is compiled once for any number of rows; a
 * single-row claim is, with `preparedStatements`, prepared once per connection.
 */
export class GenerationStore extends ProcessedEventStore {
  private readonly gens;
  private readonly legacy;
  private readonly gate;
  private readonly fenceTable;
  /** The claim of a single row, prepared once per connection (with `preparedStatements`). */
  private readonly claimOne: CompiledOnce<ClaimArgs>;
  /**
   * The same statement for several rows, never prepared: planned at each execution with its
   * arrays' real sizes, as the plain batch claim is (one prepared statement for both would reuse
   * for 500 rows a generic plan Postgres chose over single-row claims).
   */
  private readonly claimMany: CompiledOnce<ClaimArgs>;
  /** The current slot each open transaction's gate returned (where a re-drive moves a record). */
  private readonly slotOf = new WeakMap<object, number>();

  constructor(
    schema: string,
    private readonly groupId: string,
    options: { preparedStatements?: boolean } = {},
  ) {
    super(schema, groupId, options);
    this.gens = sql.id(schema, 'processed_event_generations');
    this.legacy = sql.id(schema, 'processed_events');
    this.gate = sql.id(schema, 'dedup_claim_gate');
    this.fenceTable = sql.id(schema, 'partition_fences');
    this.claimOne = new CompiledOnce<ClaimArgs>(options.preparedStatements ?? true);
    this.claimMany = new CompiledOnce<ClaimArgs>(false);
  }

  override async open(trx: Db, options: OpenOptions): Promise<OpenResult> {
    const { rows, fence } = options;
    const first = rows[0];
    const args: ClaimArgs = [...claimArguments(options), first?.topic ?? null, first?.partition ?? null];
    const also = options.also;
    const key = `${fence === undefined ? 'unfenced' : 'fenced'}:${also === undefined ? '' : 'also'}`;
    const result = await (rows.length === 1 ? this.claimOne : this.claimMany).execute<{ held: boolean; slot: number | null; claimed: Array<[IdOrigin, string]> | null; stored: Array<[IdOrigin, string, string, StoredEvent['status']]> | null }>(
      trx,
      key,
      args,
      (lockTimeout, statementTimeout, idleTimeout, fenceTopic, fencePartition, fenceEpoch, origins, ids, hashes, topics, partitions, offsets, statuses, errors, alsoTopic, alsoPartition) => {
        const { settings, held, locked } = claimGuards(this.fenceTable, this.groupId, fence !== undefined, [lockTimeout, statementTimeout, idleTimeout, fenceTopic, fencePartition, fenceEpoch]);
        return sql`
          WITH settings AS MATERIALIZED (${settings}),
          fence AS MATERIALIZED (${held}),
          gate AS MATERIALIZED (SELECT g.current_slot, g.seen FROM fence, LATERAL ${this.gate}(${this.groupId}, ${origins}::text[], ${ids}::text[]) g),
          claimed AS (
            INSERT INTO ${this.gens} (consumer_group, id_origin, event_id, payload_hash, topic, partition, kafka_offset, status, error, slot)
            SELECT ${this.groupId}, u.id_origin, u.event_id, u.payload_hash, u.topic, u.partition, u.kafka_offset, u.status, u.error, gate.current_slot
            FROM unnest(${origins}::text[], ${ids}::text[], ${hashes}::text[], ${topics}::text[], ${partitions}::int[], ${offsets}::bigint[], ${statuses}::text[], ${errors}::text[])
                 WITH ORDINALITY AS u(id_origin, event_id, payload_hash, topic, partition, kafka_offset, status, error, n), gate
            WHERE NOT (u.n::int = ANY (gate.seen))
            ON CONFLICT (consumer_group, id_origin, event_id, slot) DO NOTHING
            RETURNING id_origin, event_id),
          unclaimed AS (
            SELECT id_origin, event_id FROM unnest(${origins}::text[], ${ids}::text[]) AS k(id_origin, event_id) WHERE EXISTS (SELECT 1 FROM gate)
            EXCEPT SELECT id_origin, event_id FROM claimed),
          stored AS (
            SELECT x.id_origin, x.event_id, e.payload_hash, e.status FROM unclaimed x,
            LATERAL (SELECT payload_hash, status FROM ${this.gens} WHERE consumer_group = ${this.groupId} AND id_origin = x.id_origin AND event_id = x.event_id
                     UNION ALL
                     SELECT payload_hash, status FROM ${this.legacy} WHERE consumer_group = ${this.groupId} AND id_origin = x.id_origin AND event_id = x.event_id
                     LIMIT 1) e),
          locked AS MATERIALIZED (${locked})
          SELECT EXISTS (SELECT 1 FROM fence) AND (NOT EXISTS (SELECT 1 FROM claimed) OR EXISTS (SELECT 1 FROM locked)) AS held,
                 (SELECT current_slot FROM gate) AS slot,
                 (SELECT json_agg(json_build_array(id_origin, event_id)) FROM claimed) AS claimed,
                 (SELECT json_agg(json_build_array(id_origin, event_id, payload_hash, status)) FROM stored) AS stored
                 ${also === undefined ? sql`` : also(alsoTopic, alsoPartition)}`;
      },
      { begin: options.begin === true, ...(options.commitFirst === undefined ? {} : { commitFirst: options.commitFirst }) },
    );
    const row = result.rows[0];
    if (row?.slot !== null && row?.slot !== undefined) this.slotOf.set(trx, row.slot);
    return {
      held: row?.held === true,
      claimed: new Set((row?.claimed ?? []).map(([origin, id]) => idKey(origin, id))),
      stored: new Map((row?.stored ?? []).map(([origin, id, payloadHash, status]) => [idKey(origin, id), { payloadHash, status }])),
      also: (row ?? {}) as Record<string, unknown>,
    };
  }

  override async storedHashes(trx: Db, keys: EventKey[]): Promise<Map<string, StoredEvent>> {
    if (keys.length === 0) return new Map();
    const result = await sql<{ id_origin: IdOrigin; event_id: string; payload_hash: string; status: StoredEvent['status'] }>`
      SELECT k.id_origin, k.event_id, p.payload_hash, p.status
      FROM unnest(${keys.map((k) => k.origin)}::text[], ${keys.map((k) => k.eventId)}::text[]) AS k(id_origin, event_id)
      CROSS JOIN LATERAL (SELECT payload_hash, status FROM ${this.gens} WHERE consumer_group = ${this.groupId} AND id_origin = k.id_origin AND event_id = k.event_id
                          UNION ALL
                          SELECT payload_hash, status FROM ${this.legacy} WHERE consumer_group = ${this.groupId} AND id_origin = k.id_origin AND event_id = k.event_id
                          LIMIT 1) p`.execute(trx);
    return new Map(result.rows.map((r) => [idKey(r.id_origin, r.event_id), { payloadHash: r.payload_hash, status: r.status }]));
  }

  /**
   * {@link ProcessedEventStore.redrive} over both tables: a record in a generation moves to the
   * current one (its window starts again, as `processed_at` did before generations); a record in
   * the legacy table is updated where it is (forgotten with the legacy table).
   */
  override async redrive(trx: Db, requests: Array<EventKey & { redriveId: string; offset: string }>): Promise<Redriven[]> {
    if (requests.length === 0) return [];
    const slot = this.slotOf.get(trx);
    if (slot === undefined) throw new Error('GenerationStore.redrive: open() was not called in this transaction');
    return [...(await redriveIn(trx, this.gens, this.groupId, requests, sql`, slot = ${slot}::int`)), ...(await redriveIn(trx, this.legacy, this.groupId, requests))];
  }

  override async restore(trx: Db, taken: Redriven[]): Promise<void> {
    if (taken.length === 0) return;
    for (const table of [this.gens, this.legacy]) await restoreIn(trx, table, this.groupId, taken);
  }

  /** Claims are only ever made in the generations (never in the legacy table). */
  override async release(trx: Db, keys: EventKey[]): Promise<void> {
    if (keys.length === 0) return;
    await releaseIn(trx, this.gens, this.groupId, keys);
  }

  override async markDeadLettered(trx: Db, key: EventKey, error: string, attempts: number): Promise<void> {
    await markDeadLetteredIn(trx, this.gens, this.groupId, key, error, attempts);
  }
}
