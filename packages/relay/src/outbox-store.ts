/**
 * The relay's SQL, one function per statement. Every identifier is a checked schema name passed
 * through `sql.id`; every value is a bound parameter.
 */
import { assertIdentifier, InvalidConfigError } from '@effectively/core';
import { sql, type Kysely, type Transaction } from 'kysely';

type Db = Kysely<unknown> | Transaction<unknown>;

/** A pending outbox row as the relay reads it. */
export interface OutboxRow {
  /** bigserial, as a decimal string. */
  id: string;
  event_id: string;
  topic: string;
  message_key: Buffer | null;
  payload: Buffer | null;
  headers: Record<string, unknown> | null;
  attempts: number;
  lane: number;
  /** When the writing transaction started, in ms since the epoch. */
  created_ms: number;
}

/**
 * Locks and renews, in the caller's transaction, those of `lanes` this relay still owns
 * (`FOR UPDATE SKIP LOCKED`: a lane whose row another transaction holds, such as a stalled relay's
 * claim, is left out). Rows of the returned lanes may be published until the transaction ends.
 * `settings`: transaction-local settings (`set_config(name, value, true)`) made by the same
 * statement, one round trip fewer per claim.
 */
export async function lockOwnedLanes(trx: Transaction<unknown>, schema: string, relayId: string, lanes: readonly number[], leaseMs: number, settings: Readonly<Record<string, string>> = {}): Promise<number[]> {
  const table = sql.id(schema, 'outbox_lanes');
  const names = Object.keys(settings);
  // MATERIALIZED and referenced: the CTE runs once, before the lanes are locked (a one-time filter).
  const { rows } = await sql<{ lane: number }>`${names.length === 0 ? sql`` : sql`
    WITH settings AS MATERIALIZED (SELECT ${sql.join(names.map((name) => sql`set_config(${name}, ${settings[name] as string}, true)`))})`}
    UPDATE ${table} SET lease_until = now() + ${leaseMs}::float8 * interval '1 millisecond'
    WHERE lane IN (SELECT lane FROM ${table} WHERE owner = ${relayId} AND lane = ANY(${[...lanes]}::int[]) FOR UPDATE SKIP LOCKED)${names.length === 0 ? sql`` : sql`
      AND EXISTS (SELECT 1 FROM settings)`}
    RETURNING lane`.execute(trx);
  return rows.map((r) => r.lane).sort((a, b) => a - b);
}

/**
 * Rows ready to publish in `lanes`, oldest id first. Not an `id > last_seen` watermark: a
 * transaction that took a lower id but committed later is still found. A row waits while an
 * earlier row of its topic and key backs off or is parked, so keys stay in order; keyless rows
 * never wait. A row never tried (`attempts = 0`: new, or re-queued) is always due: only a row
 * that is backing off waits for `available_at`, and it then holds back the later rows of its key
 * too (a re-queued row, whose `available_at` is later than the claim's `now()`, was otherwise
 * neither due nor blocking, and a later row of its key went first). `exclude`: rows of this
 * claim already sent and not yet deleted; `deleteFirst`: acknowledged rows to delete in the same
 * statement (one round trip fewer per batch). (`OFFSET 0` keeps the check a per-row probe of the
 * small blocking index: with stale statistics the planner otherwise picked a nested-loop
 * anti-join that took 41 s over 100k rows.)
 */
export async function fetchPending(db: Db, schema: string, lanes: readonly number[], limit: number, options: { exclude?: readonly string[]; deleteFirst?: readonly string[] } = {}): Promise<OutboxRow[]> {
  const outbox = sql.id(schema, 'outbox');
  const deleting = options.deleteFirst ?? [];
  // The SELECT does not see the CTE's delete (one snapshot per statement): leave those rows out too.
  const exclude = [...(options.exclude ?? []), ...deleting];
  const { rows } = await sql<OutboxRow>`${deleting.length === 0 ? sql`` : sql`
    WITH deleted AS (DELETE FROM ${outbox} WHERE id = ANY(${[...deleting]}::bigint[]))`}
    SELECT o.id::text AS id, o.event_id, o.topic, o.message_key, o.payload, o.headers, o.attempts, o.lane,
      (EXTRACT(EPOCH FROM o.created_at) * 1000)::float8 AS created_ms
    FROM ${outbox} o
    WHERE o.lane = ANY(${[...lanes]}::int[]) AND o.status = 'pending' AND (o.attempts = 0 OR o.available_at <= now())${exclude.length === 0 ? sql`` : sql`
      AND o.id <> ALL(${[...exclude]}::bigint[])`}
      AND NOT EXISTS (
        SELECT 1 FROM ${outbox} b
        WHERE b.lane = o.lane AND b.topic = o.topic AND b.message_key = o.message_key AND b.id < o.id
          AND (b.status = 'parked' OR (b.status = 'pending' AND b.attempts > 0 AND b.available_at > now()))
        OFFSET 0)
    ORDER BY o.id
    LIMIT ${limit}`.execute(db);
  for (const row of rows) row.created_ms = Number(row.created_ms);
  return rows;
}

/**
 * Whether any row of `lanes` is due: one probe of the pending index (`ORDER BY id` keeps the
 * planner on it; a bare EXISTS was planned as a sequential scan once statistics said most rows
 * were pending, 76-400 ms per idle poll at 1M rows). Lets an idle relay skip the claim.
 */
export async function anyDue(db: Db, schema: string, lanes: readonly number[]): Promise<boolean> {
  const { rows } = await sql<{ one: number }>`
    SELECT 1 AS one FROM ${sql.id(schema, 'outbox')}
    WHERE status = 'pending' AND lane = ANY(${[...lanes]}::int[]) AND (attempts = 0 OR available_at <= now())
    ORDER BY id LIMIT 1`.execute(db);
  return rows.length > 0;
}

/**
 * Deletes rows Kafka acknowledged. Deleting (rather than marking published) keeps the table as
 * small as its backlog: measured in `bench/outbox-table.ts`, see the README.
 */
export async function deletePublished(db: Db, schema: string, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await sql`DELETE FROM ${sql.id(schema, 'outbox')} WHERE id = ANY(${[...ids]}::bigint[])`.execute(db);
}

/** Records a failed attempt: either back the row off until `delayMs` from now, or park it. */
export async function markFailed(db: Db, schema: string, id: string, error: string, outcome: { park: true } | { park: false; delayMs: number }): Promise<void> {
  const message = error.slice(0, 2000);
  if (outcome.park) {
    await sql`
      UPDATE ${sql.id(schema, 'outbox')}
      SET status = 'parked', attempts = attempts + 1, last_error = ${message}
      WHERE id = ${id}::bigint AND status = 'pending'`.execute(db);
  } else {
    await sql`
      UPDATE ${sql.id(schema, 'outbox')}
      SET attempts = attempts + 1, last_error = ${message}, available_at = now() + ${outcome.delayMs}::float8 * interval '1 millisecond'
      WHERE id = ${id}::bigint AND status = 'pending'`.execute(db);
  }
}

/** What is waiting in the outbox. */
export interface OutboxBacklog {
  /** Rows not yet published (backing-off rows included, parked rows not). */
  pending: number;
  /** Rows parked for an operator. */
  parked: number;
  /** Age in seconds of the oldest pending row, 0 when none. */
  oldestPendingSeconds: number;
}

/** Counts the backlog (up to `cap` rows per status, so a huge backlog stays cheap to measure). */
export async function outboxBacklog<DB>(db: Kysely<DB>, schema: string, cap = 1_000_000): Promise<OutboxBacklog> {
  const outbox = sql.id(schema, 'outbox');
  const { rows } = await sql<{ pending: string; parked: string; oldest: number | string | null }>`
    SELECT
      (SELECT count(*) FROM (SELECT 1 FROM ${outbox} WHERE status = 'pending' LIMIT ${cap}) p) AS pending,
      (SELECT count(*) FROM (SELECT 1 FROM ${outbox} WHERE status = 'parked' LIMIT ${cap}) q) AS parked,
      (SELECT EXTRACT(EPOCH FROM now() - created_at)::float8 FROM ${outbox} WHERE status = 'pending' ORDER BY id LIMIT 1) AS oldest`.execute(db);
  const r = rows[0];
  const oldest = Number(r?.oldest ?? 0);
  return { pending: Number(r?.pending ?? 0), parked: Number(r?.parked ?? 0), oldestPendingSeconds: Number.isFinite(oldest) && oldest > 0 ? oldest : 0 };
}

/** Options for {@link pruneOutbox}. */
export interface PruneOutboxOptions {
  /** Schema with effectively's tables; default `effectively`. */
  schema?: string;
  /** Delete published rows whose `published_at` is older than this. Required. */
  olderThanMs: number;
  /** Rows per DELETE statement (short transactions, little lock time); default 1,000. */
  batchSize?: number;
}

/**
 * Deletes rows with status `published` older than `olderThanMs`, in small batches. The relay
 * deletes what it publishes, so only rows marked published by other tools (or by effectively
 * before 0.2) are left for this; pending and parked rows are never touched.
 */
export async function pruneOutbox<DB>(db: Kysely<DB>, options: PruneOutboxOptions): Promise<{ deleted: number }> {
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  if (typeof options.olderThanMs !== 'number' || !Number.isFinite(options.olderThanMs) || options.olderThanMs < 0) {
    throw new InvalidConfigError(`olderThanMs must be a non-negative number of milliseconds, got ${JSON.stringify(options.olderThanMs)}.`);
  }
  const batchSize = options.batchSize ?? 1_000;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000) {
    throw new InvalidConfigError(`batchSize must be an integer between 1 and 100000, got ${JSON.stringify(batchSize)}.`);
  }
  const outbox = sql.id(schema, 'outbox');
  let deleted = 0;
  for (;;) {
    const result = await sql`
      DELETE FROM ${outbox}
      WHERE id IN (
        SELECT id FROM ${outbox}
        WHERE status = 'published' AND published_at < now() - ${options.olderThanMs}::float8 * interval '1 millisecond'
        ORDER BY published_at
        LIMIT ${batchSize})`.execute(db);
    const n = Number(result.numAffectedRows ?? 0n);
    deleted += n;
    if (n < batchSize) return { deleted };
  }
}
