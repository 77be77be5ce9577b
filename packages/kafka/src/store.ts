import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import { assertIdentifier, InvalidConfigError, untyped } from '@effectively/core';
import { generationsEnabled } from './generations';
import { storableText } from './storable-text';
import { idKey } from './classify';
import type { IdOrigin } from './event-id';
import { CompiledOnce } from './prepared';

/** An event's key in `processed_events` (besides the group). */
export interface EventKey {
  origin: IdOrigin;
  eventId: string;
}

/** A row to claim in `processed_events`. */
export interface ClaimRow {
  eventId: string;
  /** `producer` or `derived`: part of the key, so the two never collide. */
  origin: IdOrigin;
  payloadHash: string;
  topic: string;
  partition: number;
  offset: string;
  /** `dead_lettered` for messages that go straight to the dead-letter topic. */
  status: 'processed' | 'dead_lettered';
  error: string | null;
}

type Db = Kysely<unknown> | Transaction<unknown>;

/** The values of {@link ProcessedEventStore.open}'s statement for several rows, in order (per column, an array of the rows' values). */
type ManyArgs = [...ClaimArguments, string, number];

/** The values of {@link ProcessedEventStore.openOne}'s statement, in order. */
type OneArgs = [...ClaimHead, IdOrigin, string, string, string, number, string, string, string | null];

/** What `processed_events` holds for a key already recorded. */
export interface StoredEvent {
  payloadHash: string;
  status: 'processed' | 'dead_lettered';
}

/** A dead-lettered event taken back for a re-drive, with what to restore if its handling does not settle. */
export interface Redriven extends EventKey {
  previousRedriveId: string | null;
  previousError: string | null;
  previousAttempts: number;
}

/** What {@link ProcessedEventStore.open} needs. */
export interface OpenOptions {
  lockTimeoutMs: number;
  statementTimeoutMs: number;
  /** The partition epoch this member holds; omitted when fencing is off. */
  fence?: { topic: string; partition: number; epoch: string };
  rows: ClaimRow[];
  /** The transaction is not begun yet: this statement begins it (with a single row and prepared statements, in the same round trip). */
  begin?: boolean;
  /**
   * With `begin` and a single row: COMMIT of the transaction open on the connection goes first,
   * in the same round trip (see `FoldOptions.commitFirst` in prepared.ts: its tag is written
   * here). Only where begin folding works (`foldsBegin`).
   */
  commitFirst?: { tag?: string };
  /**
   * More columns for the same round trip (`, expr AS name, …`) about the chunk's topic and
   * partition (passed in as values only: the statement may be compiled once with placeholders for
   * them); their values come back in `also`.
   */
  also?: (topic: unknown, partition: unknown) => RawBuilder<unknown>;
}

/**
 * The values every claim statement (of this store and of `GenerationStore`) begins with, in
 * order: its transaction's time-outs (lock waits, statements, idling: twice the statement
 * time-out) and the partition fence (nulls when fencing is off). Internal to the package.
 */
export type ClaimHead = [lockTimeout: string, statementTimeout: string, idleTimeout: string, fenceTopic: string | null, fencePartition: number | null, fenceEpoch: string | null];

/** {@link ClaimHead}, then the claimed rows' values, per column an array (in the order of `unnest` in the statements). Internal to the package. */
export type ClaimArguments = [...ClaimHead, origins: IdOrigin[], ids: string[], hashes: string[], topics: string[], partitions: number[], offsets: string[], statuses: string[], errors: Array<string | null>];

/** The {@link ClaimHead} values of a claim with `options`. */
export function claimHead(options: OpenOptions): ClaimHead {
  const { fence } = options;
  return [`${options.lockTimeoutMs}ms`, `${options.statementTimeoutMs}ms`, `${options.statementTimeoutMs * 2}ms`, fence?.topic ?? null, fence?.partition ?? null, fence?.epoch ?? null];
}

/** The {@link ClaimArguments} of a multi-row claim with `options` (errors cut to what Postgres stores, see {@link storableText}). */
export function claimArguments(options: OpenOptions): ClaimArguments {
  const { rows } = options;
  return [
    ...claimHead(options),
    rows.map((r) => r.origin),
    rows.map((r) => r.eventId),
    rows.map((r) => r.payloadHash),
    rows.map((r) => r.topic),
    rows.map((r) => r.partition),
    rows.map((r) => r.offset),
    rows.map((r) => r.status),
    rows.map((r) => (r.error === null ? null : storableText(r.error))),
  ];
}

/**
 * The guards every claim statement starts with, built from its {@link ClaimHead} values (as
 * passed to a {@link CompiledOnce} build, untransformed): `settings` (a CTE's body) sets the
 * time-outs; `held` (the `fence` CTE's body) has a row when the partition fence matches (always,
 * when `fenced` is false), after `settings`; `locked` locks the fence row `FOR SHARE` once the
 * statement's `claimed` CTE has a row. `fences` is the schema's `partition_fences`.
 */
export function claimGuards(fences: RawBuilder<unknown>, group: string, fenced: boolean, head: ClaimHead): { settings: RawBuilder<unknown>; held: RawBuilder<unknown>; locked: RawBuilder<unknown> } {
  const [lockTimeout, statementTimeout, idleTimeout, fenceTopic, fencePartition, fenceEpoch] = head;
  const settings = sql`SELECT set_config('lock_timeout', ${lockTimeout}, true) AS a,
                                    set_config('statement_timeout', ${statementTimeout}, true) AS b,
                                    set_config('idle_in_transaction_session_timeout', ${idleTimeout}, true) AS c`;
  const where = (f: ReturnType<typeof sql.raw>) =>
    sql`${f}.consumer_group = ${group} AND ${f}.topic = ${fenceTopic} AND ${f}.partition = ${fencePartition}::int AND ${f}.epoch = ${fenceEpoch}::bigint`;
  const held = !fenced ? sql`SELECT 1 AS held FROM settings` : sql`SELECT 1 AS held FROM ${fences} f, settings WHERE ${where(sql.raw('f'))}`;
  const locked = !fenced ? sql`SELECT 1 AS locked` : sql`SELECT 1 AS locked FROM ${fences} f WHERE ${where(sql.raw('f'))} AND EXISTS (SELECT 1 FROM claimed) FOR SHARE OF f`;
  return { settings, held, locked };
}

/** What {@link ProcessedEventStore.open} found. */
export interface OpenResult {
  /** False when the fence did not match: the partition has a newer owner; nothing was claimed. */
  held: boolean;
  /** {@link idKey}s newly claimed by this transaction. */
  claimed: Set<string>;
  /** Keys already recorded before this statement, by {@link idKey}. */
  stored: Map<string, StoredEvent>;
  /** The row's values of the `also` columns. */
  also: Record<string, unknown>;
}

/**
 * The statements below that change records named by key find each record first, key by key, by
 * primary key (`LATERAL … LIMIT 1`, one record per key and group across the live tables), into a
 * materialized set `x(rel, row, …)` of table oid and row id; the target is then matched by row id
 * alone (`p.ctid = ANY (…)`, a TID scan, plus the exact `tableoid` and `ctid`). Joining the key set
 * to the table instead lets the planner read the table, or a partition, by the group's prefix of
 * the primary key or hash it whole whenever its statistics say it is small: a generation filled
 * since its last ANALYZE (a minute at 40,000 claims/s) was read whole by every release of failed
 * claims (about 60,000 index entries and rows a round in the test). With no index usable on the target, its only
 * other path is a sequential scan, which Postgres costs by the table's real size in pages.
 */
function locate(table: RawBuilder<unknown>, group: string): RawBuilder<unknown> {
  return sql`CROSS JOIN LATERAL (SELECT p.tableoid AS rel, p.ctid AS row FROM ${table} p
                                 WHERE p.consumer_group = ${group} AND p.id_origin = k.id_origin AND p.event_id = k.event_id LIMIT 1) l`;
}

/** The target rows of a statement over `x` (see {@link locate}): by row id, then the exact table and row. */
const located = sql`p.ctid = ANY (ARRAY(SELECT row FROM x)) AND p.tableoid = x.rel AND p.ctid = x.row`;

/**
 * Re-drives taken from `table` (see {@link ProcessedEventStore.redrive}), `set` added to the
 * update (the generations move the record to the current slot). Two statements: each request's
 * record is found by primary key and locked (`FOR UPDATE`), then updated by row id (see
 * {@link locate}) in a statement of its own. In one statement the update would read with the
 * snapshot taken before the lock: a record another transaction changed and committed meanwhile
 * (a concurrent re-drive's restore) is locked in its newest version, which that snapshot does not
 * see, and would be left out silently.
 */
export async function redriveIn(trx: Db, table: RawBuilder<unknown>, group: string, requests: Array<EventKey & { redriveId: string; offset: string }>, set: RawBuilder<unknown> = sql``): Promise<Redriven[]> {
  const found = await sql<{ rel: string; row: string; id_origin: IdOrigin; event_id: string; redrive_id: string; kafka_offset: string; previous_redrive_id: string | null; previous_error: string | null; previous_attempts: number }>`
    SELECT l.rel::text AS rel, l.row::text AS row, k.id_origin, k.event_id, k.redrive_id, k.kafka_offset::text AS kafka_offset, l.previous_redrive_id, l.previous_error, l.previous_attempts
    FROM unnest(${requests.map((q) => q.origin)}::text[], ${requests.map((q) => q.eventId)}::text[], ${requests.map((q) => q.redriveId)}::text[], ${requests.map((q) => q.offset)}::bigint[])
         AS k(id_origin, event_id, redrive_id, kafka_offset)
    CROSS JOIN LATERAL (SELECT p.tableoid AS rel, p.ctid AS row, p.redrive_id AS previous_redrive_id, p.error AS previous_error, p.attempts AS previous_attempts FROM ${table} p
                        WHERE p.consumer_group = ${group} AND p.id_origin = k.id_origin AND p.event_id = k.event_id
                          AND p.status = 'dead_lettered' AND p.redrive_id IS DISTINCT FROM k.redrive_id
                        LIMIT 1 FOR UPDATE OF p) l`.execute(trx);
  const taken = found.rows;
  if (taken.length === 0) return [];
  const updated = await sql`
    WITH x AS MATERIALIZED (SELECT * FROM unnest(${taken.map((t) => t.rel)}::oid[], ${taken.map((t) => t.row)}::tid[], ${taken.map((t) => t.redrive_id)}::text[], ${taken.map((t) => t.kafka_offset)}::bigint[])
                            AS x(rel, row, redrive_id, kafka_offset))
    UPDATE ${table} p SET status = 'processed', redrive_id = x.redrive_id, error = NULL, kafka_offset = x.kafka_offset, processed_at = now()${set}
    FROM x
    WHERE ${located}`.execute(trx);
  // Locked by this transaction since the first statement: every one is there to update.
  if (Number(updated.numAffectedRows ?? 0) !== taken.length) throw new Error(`re-drive: ${taken.length} records locked but ${String(updated.numAffectedRows)} updated; the chunk is retried`);
  return taken.map((r) => ({ origin: r.id_origin, eventId: r.event_id, previousRedriveId: r.previous_redrive_id, previousError: r.previous_error, previousAttempts: r.previous_attempts }));
}

/** Puts re-driven records of `table` back (see {@link ProcessedEventStore.restore}), found by primary key. */
export async function restoreIn(trx: Db, table: RawBuilder<unknown>, group: string, taken: Redriven[]): Promise<void> {
  await sql`
    WITH x AS MATERIALIZED (
      SELECT l.rel, l.row, k.redrive_id, k.error, k.attempts
      FROM unnest(${taken.map((k) => k.origin)}::text[], ${taken.map((k) => k.eventId)}::text[], ${taken.map((k) => k.previousRedriveId)}::text[],
                  ${taken.map((k) => k.previousError)}::text[], ${taken.map((k) => k.previousAttempts)}::int[]) AS k(id_origin, event_id, redrive_id, error, attempts)
      ${locate(table, group)})
    UPDATE ${table} p SET status = 'dead_lettered', redrive_id = x.redrive_id, error = x.error, attempts = x.attempts
    FROM x
    WHERE ${located}`.execute(trx);
}

/** Deletes the records of `keys` from `table`, found by primary key. */
export async function releaseIn(trx: Db, table: RawBuilder<unknown>, group: string, keys: EventKey[]): Promise<void> {
  await sql`
    WITH x AS MATERIALIZED (
      SELECT l.rel, l.row FROM unnest(${keys.map((k) => k.origin)}::text[], ${keys.map((k) => k.eventId)}::text[]) AS k(id_origin, event_id)
      ${locate(table, group)})
    DELETE FROM ${table} p USING x
    WHERE ${located}`.execute(trx);
}

/** Marks the record of `key` in `table` dead-lettered, with the error and the attempts spent; found by primary key. */
export async function markDeadLetteredIn(trx: Db, table: RawBuilder<unknown>, group: string, key: EventKey, error: string, attempts: number): Promise<void> {
  await sql`
    WITH x AS MATERIALIZED (SELECT l.rel, l.row FROM (VALUES (${key.origin}::text, ${key.eventId}::text)) AS k(id_origin, event_id) ${locate(table, group)})
    UPDATE ${table} p SET status = 'dead_lettered', error = ${storableText(error)}, attempts = ${attempts}
    FROM x
    WHERE ${located}`.execute(trx);
}

/**
 * The SQL of the idempotent consumer, one method per statement. Every statement is one round
 * trip whatever the number of events (arrays through `unnest`), and every identifier has been
 * checked by `assertIdentifier` before it gets here.
 */
export class ProcessedEventStore {
  private readonly events;
  private readonly fences;
  /** The single-row claim of {@link openOne}, compiled once (and prepared once per connection when named). */
  private readonly one: CompiledOnce<OneArgs>;
  /** The multi-row claim of {@link open}, compiled once, never prepared (see the constructor). */
  private readonly many: CompiledOnce<ManyArgs>;

  constructor(
    schema: string,
    private readonly group: string,
    options: { preparedStatements?: boolean } = {},
  ) {
    this.events = sql.id(schema, 'processed_events');
    this.fences = sql.id(schema, 'partition_fences');
    this.one = new CompiledOnce<OneArgs>(options.preparedStatements ?? true);
    // Never a named prepared statement: after five executions Postgres may switch a prepared
    // statement to its generic plan, and for this one (arrays of unknown size) that plan reads
    // processed_events in a way that grows with the table: 2,044 against 43,047 events/s at
    // 256,000 messages (`npm run bench -- --only "batch mode (500)"`, the second with
    // plan_cache_mode = force_custom_plan). Planned at each execution with its arrays' real sizes.
    this.many = new CompiledOnce<ManyArgs>(false);
  }

  /**
   * Opens a chunk's transaction in ONE round trip: bounds it (lock waits, statements, idling),
   * checks the partition fence, claims `rows` and reads the stored payload hashes of the ids that
   * were already there (probing the index only for those, not for every id). Once something is claimed, the fence row is locked `FOR SHARE` until commit:
   * that conflicts with the epoch bump of {@link takePartition} (an UPDATE), so a member whose
   * epoch was replaced cannot commit, and no row version is written per transaction. When the
   * fence does not match (`held: false`) the caller must roll back. A transaction that claimed
   * nothing holds no lock: call {@link lockFence} before writing anything else in it.
   *
   * Ids that another transaction committed while this one waited on them are not claimed and
   * may have no stored hash here (the statement's snapshot predates them); {@link storedHashes}
   * reads them.
   */
  async open(trx: Db, options: OpenOptions): Promise<OpenResult> {
    const { rows, fence } = options;
    if (rows.length === 1) return this.openOne(trx, rows[0] as ClaimRow, options);
    const first = rows[0] as ClaimRow;
    const args: ManyArgs = [...claimArguments(options), first.topic, first.partition];
    const key = `${fence === undefined ? 'unfenced' : 'fenced'}:${options.also === undefined ? '' : 'also'}`;
    const also = options.also;
    // Compiled once (Kysely builds this text once, not per chunk) and, with preparedStatements, planned once per connection.
    const result = await this.many.execute<{ held: boolean; claimed: Array<[IdOrigin, string]> | null; stored: Array<[IdOrigin, string, string, StoredEvent['status']]> | null }>(
      trx,
      key,
      args,
      (lockTimeout, statementTimeout, idleTimeout, fenceTopic, fencePartition, fenceEpoch, origins, ids, hashes, topics, partitions, offsets, statuses, errors, alsoTopic, alsoPartition) => {
        const { settings, held, locked } = claimGuards(this.fences, this.group, fence !== undefined, [lockTimeout, statementTimeout, idleTimeout, fenceTopic, fencePartition, fenceEpoch]);
        return sql`
      WITH settings AS MATERIALIZED (${settings}),
      fence AS MATERIALIZED (${held}),
      claimed AS (
        INSERT INTO ${this.events} (consumer_group, id_origin, event_id, payload_hash, topic, partition, kafka_offset, status, error)
        SELECT ${this.group}, u.id_origin, u.event_id, u.payload_hash, u.topic, u.partition, u.kafka_offset, u.status, u.error
        FROM unnest(${origins}::text[], ${ids}::text[], ${hashes}::text[], ${topics}::text[], ${partitions}::int[], ${offsets}::bigint[], ${statuses}::text[], ${errors}::text[])
             AS u(id_origin, event_id, payload_hash, topic, partition, kafka_offset, status, error)
        WHERE EXISTS (SELECT 1 FROM fence)
        ON CONFLICT (consumer_group, id_origin, event_id) DO NOTHING
        RETURNING id_origin, event_id),
      unclaimed AS (
        SELECT id_origin, event_id FROM unnest(${origins}::text[], ${ids}::text[]) AS k(id_origin, event_id) WHERE EXISTS (SELECT 1 FROM fence)
        EXCEPT SELECT id_origin, event_id FROM claimed),
      stored AS (
        SELECT x.id_origin, x.event_id, e.payload_hash, e.status FROM unclaimed x,
        LATERAL (SELECT payload_hash, status FROM ${this.events}
                 WHERE consumer_group = ${this.group} AND id_origin = x.id_origin AND event_id = x.event_id LIMIT 1) e),
      locked AS MATERIALIZED (${locked})
      SELECT EXISTS (SELECT 1 FROM fence) AND (NOT EXISTS (SELECT 1 FROM claimed) OR EXISTS (SELECT 1 FROM locked)) AS held,
             (SELECT json_agg(json_build_array(id_origin, event_id)) FROM claimed) AS claimed,
             (SELECT json_agg(json_build_array(id_origin, event_id, payload_hash, status)) FROM stored) AS stored
             ${also === undefined ? sql`` : also(alsoTopic, alsoPartition)}`;
      },
      { begin: options.begin === true },
    );
    const row = result.rows[0];
    return {
      held: row?.held === true,
      claimed: new Set((row?.claimed ?? []).map(([origin, id]) => idKey(origin, id))),
      stored: new Map((row?.stored ?? []).map(([origin, id, payloadHash, status]) => [idKey(origin, id), { payloadHash, status }])),
      also: (row ?? {}) as Record<string, unknown>,
    };
  }

  /**
   * {@link open} for a single row (per-event mode, or a chunk with one candidate): the same
   * checks, locks and answers in a statement about half as costly for Postgres to plan (no
   * arrays to unnest, no set operations, no aggregates), compiled once per store and, with
   * `preparedStatements`, prepared once per connection (see {@link CompiledOnce}).
   */
  private async openOne(trx: Db, row: ClaimRow, options: OpenOptions): Promise<OpenResult> {
    const { fence } = options;
    const error = row.error === null ? null : storableText(row.error);
    const args: OneArgs = [...claimHead(options), row.origin, row.eventId, row.payloadHash, row.topic, row.partition, row.offset, row.status, error];
    const key = `${fence === undefined ? 'unfenced' : 'fenced'}:${options.also === undefined ? '' : 'also'}`;
    const also = options.also;
    const result = await this.one.execute<{ held: boolean; claimed: boolean; stored: [string, StoredEvent['status']] | null }>(
      trx,
      key,
      args,
      (lockTimeout, statementTimeout, idleTimeout, fenceTopic, fencePartition, fenceEpoch, origin, eventId, payloadHash, topic, partition, offset, status, storedError) => {
        const { settings, held, locked } = claimGuards(this.fences, this.group, fence !== undefined, [lockTimeout, statementTimeout, idleTimeout, fenceTopic, fencePartition, fenceEpoch]);
        const key = sql`consumer_group = ${this.group} AND id_origin = ${origin} AND event_id = ${eventId}`;
        return sql`
          WITH settings AS MATERIALIZED (${settings}),
          fence AS MATERIALIZED (${held}),
          claimed AS (
            INSERT INTO ${this.events} (consumer_group, id_origin, event_id, payload_hash, topic, partition, kafka_offset, status, error)
            SELECT ${this.group}, ${origin}, ${eventId}, ${payloadHash}, ${topic}, ${partition}::int, ${offset}::bigint, ${status}, ${storedError}::text
            WHERE EXISTS (SELECT 1 FROM fence)
            ON CONFLICT (consumer_group, id_origin, event_id) DO NOTHING
            RETURNING 1),
          locked AS MATERIALIZED (${locked})
          SELECT EXISTS (SELECT 1 FROM fence) AND (NOT EXISTS (SELECT 1 FROM claimed) OR EXISTS (SELECT 1 FROM locked)) AS held,
                 EXISTS (SELECT 1 FROM claimed) AS claimed,
                 (SELECT json_build_array(payload_hash, status) FROM ${this.events}
                  WHERE ${key} AND EXISTS (SELECT 1 FROM fence) AND NOT EXISTS (SELECT 1 FROM claimed)) AS stored
                 ${also === undefined ? sql`` : also(topic, partition)}`;
      },
      { begin: options.begin === true, ...(options.commitFirst === undefined ? {} : { commitFirst: options.commitFirst }) },
    );
    const r = result.rows[0];
    const k = idKey(row.origin, row.eventId);
    const stored = r?.stored ?? null;
    return {
      held: r?.held === true,
      claimed: new Set(r?.claimed === true ? [k] : []),
      stored: new Map(stored === null ? [] : [[k, { payloadHash: stored[0], status: stored[1] }]]),
      also: (r ?? {}) as Record<string, unknown>,
    };
  }

  /** Takes the fence's share lock (see {@link open}); false when the epoch is no longer this member's. */
  async lockFence(trx: Db, fence: { topic: string; partition: number; epoch: string }): Promise<boolean> {
    const result = await sql`SELECT 1 FROM ${this.fences}
      WHERE consumer_group = ${this.group} AND topic = ${fence.topic} AND partition = ${fence.partition} AND epoch = ${fence.epoch}
      FOR SHARE`.execute(trx);
    return result.rows.length === 1;
  }

  /**
   * What is stored for already-processed keys (to spot conflicting duplicates and dead-lettered ones), by {@link idKey}.
   * One primary-key probe per key (`LATERAL … LIMIT 1`): never a hash join over the table, whatever its statistics say.
   */
  async storedHashes(trx: Db, keys: EventKey[]): Promise<Map<string, StoredEvent>> {
    if (keys.length === 0) return new Map();
    const result = await sql<{ id_origin: IdOrigin; event_id: string; payload_hash: string; status: StoredEvent['status'] }>`
      SELECT k.id_origin, k.event_id, p.payload_hash, p.status
      FROM unnest(${keys.map((k) => k.origin)}::text[], ${keys.map((k) => k.eventId)}::text[]) AS k(id_origin, event_id)
      CROSS JOIN LATERAL (SELECT payload_hash, status FROM ${this.events}
                          WHERE consumer_group = ${this.group} AND id_origin = k.id_origin AND event_id = k.event_id LIMIT 1) p`.execute(trx);
    return new Map(result.rows.map((r) => [idKey(r.id_origin, r.event_id), { payloadHash: r.payload_hash, status: r.status }]));
  }

  /**
   * Takes dead-lettered events back for a re-drive: each key whose record is `dead_lettered` and
   * has not yet applied re-drive `redriveId` becomes `processed` with that re-drive recorded, in
   * this transaction (row-locked until commit, so one re-drive applies once). Returns the keys
   * taken, with what {@link restore} puts back if their handling does not settle.
   */
  async redrive(trx: Db, requests: Array<EventKey & { redriveId: string; offset: string }>): Promise<Redriven[]> {
    if (requests.length === 0) return [];
    return redriveIn(trx, this.events, this.group, requests);
  }

  /** Puts re-driven events whose handling did not settle back as they were (dead-lettered, re-drive not applied). */
  async restore(trx: Db, taken: Redriven[]): Promise<void> {
    if (taken.length === 0) return;
    await restoreIn(trx, this.events, this.group, taken);
  }

  /** Removes claims of events whose handling did not settle in this transaction. */
  async release(trx: Db, keys: EventKey[]): Promise<void> {
    if (keys.length === 0) return;
    await releaseIn(trx, this.events, this.group, keys);
  }

  /** Marks a claimed event as dead-lettered, with the error and the attempts spent. */
  async markDeadLettered(trx: Db, key: EventKey, error: string, attempts: number): Promise<void> {
    await markDeadLetteredIn(trx, this.events, this.group, key, error, attempts);
  }

  /** Takes the partition for `memberId`: a new, higher epoch that older owners no longer match. */
  async takePartition(db: Db, topic: string, partition: number, memberId: string, lockTimeoutMs?: number): Promise<string> {
    // With `lockTimeoutMs`, one statement that gives up (55P03) when a transaction holds the fence row longer.
    const values =
      lockTimeoutMs === undefined
        ? sql`VALUES (${this.group}, ${topic}, ${partition}, 1, ${memberId})`
        : sql`SELECT ${this.group}, ${topic}, ${partition}, 1, ${memberId} FROM (SELECT set_config('lock_timeout', ${`${lockTimeoutMs}ms`}, true)) AS settings`;
    const result = await sql<{ epoch: string }>`
      INSERT INTO ${this.fences} (consumer_group, topic, partition, epoch, member_id)
      ${values}
      ON CONFLICT (consumer_group, topic, partition)
      DO UPDATE SET epoch = ${this.fences}.epoch + 1, member_id = EXCLUDED.member_id, updated_at = now()
      RETURNING epoch`.execute(db);
    return (result.rows[0] as { epoch: string }).epoch;
  }
}

/**
 * Deletes processed-event records older than `olderThanMs`, `batchSize` rows per statement
 * (short transactions, no long locks), until none are left. Returns how many were deleted.
 *
 * Not for a schema whose retention is by generations (`enableGenerations`): there it throws
 * `InvalidConfigError` before deleting anything.
 *
 * The window MUST exceed the longest replay you may ever do (an offset reset to earliest,
 * topic retention, a consumer group whose offsets expired): an event redelivered after its
 * record was pruned is applied again.
 */
export async function pruneProcessedEvents<DB>(database: Kysely<DB>, options: { schema?: string; olderThanMs: number; batchSize?: number; maxBatches?: number }): Promise<number> {
  const db = untyped(database);
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const table = sql.id(schema, 'processed_events');
  if (await generationsEnabled(db, schema)) {
    throw new InvalidConfigError(`dedup retention in schema ${schema} is by generations: records are forgotten whole generations at a time by rotateProcessedEvents (effectively retention rotate), with the window set by enableGenerations; pruneProcessedEvents deletes nothing there. Stop calling it for processed events.`);
  }
  const batchSize = options.batchSize ?? 1000;
  let total = 0;
  for (let i = 0; i < (options.maxBatches ?? Number.MAX_SAFE_INTEGER); i++) {
    const result = await sql`
      DELETE FROM ${table} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM ${table}
        WHERE processed_at < now() - make_interval(secs => ${options.olderThanMs / 1000})
        LIMIT ${batchSize}))`.execute(db);
    const deleted = Number(result.numAffectedRows ?? 0n);
    total += deleted;
    if (deleted < batchSize) break;
  }
  return total;
}
