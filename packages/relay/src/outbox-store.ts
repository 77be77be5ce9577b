import { assertIdentifier, InvalidConfigError } from '@effectively/core';
import { sql, type Kysely } from 'kysely';

/** A pending outbox row as the relay reads it. */
export interface OutboxRow {
  /** bigserial, as a decimal string. */
  id: string;
  event_id: string;
  topic: string;
  message_key: Buffer | null;
  payload: Buffer | null;
  headers: Record<string, string> | null;
  attempts: number;
}

/**
 * Rows ready to publish, oldest id first. Not an `id > last_seen` watermark: a transaction that
 * took a lower id but committed later is still found (F30). A row waits while an earlier row of
 * the same key is backing off, so keys stay in order; NULL keys never block each other.
 */
export async function fetchPending(db: Kysely<unknown>, schema: string, limit: number): Promise<OutboxRow[]> {
  const outbox = sql.id(schema, 'outbox');
  const { rows } = await sql<OutboxRow>`
    SELECT o.id::text AS id, o.event_id, o.topic, o.message_key, o.payload, o.headers, o.attempts
    FROM ${outbox} o
    WHERE o.status = 'pending'
      AND o.available_at <= now()
      AND NOT EXISTS (
        SELECT 1 FROM ${outbox} e
        WHERE e.status = 'pending'
          AND e.message_key = o.message_key
          AND e.id < o.id
          AND e.available_at > now())
    ORDER BY o.id
    LIMIT ${limit}`.execute(db);
  return rows;
}

/** Marks rows published, in one statement. */
export async function markPublished(db: Kysely<unknown>, schema: string, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await sql`
    UPDATE ${sql.id(schema, 'outbox')}
    SET status = 'published', published_at = now(), last_error = NULL
    WHERE id = ANY(${[...ids]}::bigint[]) AND status = 'pending'`.execute(db);
}

/** Records a failed attempt: either back the row off until `delayMs` from now, or park it. */
export async function markFailed(db: Kysely<unknown>, schema: string, id: string, error: string, outcome: { park: true } | { park: false; delayMs: number }): Promise<void> {
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

/** Age in seconds of the oldest pending row, 0 when none is pending. */
export async function pendingLagSeconds(db: Kysely<unknown>, schema: string): Promise<number> {
  const { rows } = await sql<{ lag: number | string | null }>`
    SELECT EXTRACT(EPOCH FROM now() - created_at)::float8 AS lag
    FROM ${sql.id(schema, 'outbox')} WHERE status = 'pending' ORDER BY id LIMIT 1`.execute(db);
  const lag = Number(rows[0]?.lag ?? 0);
  return Number.isFinite(lag) && lag > 0 ? lag : 0;
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
 * Deletes published outbox rows older than `olderThanMs`, in small batches, until none is
 * left. Pending and parked rows are never touched. Run it periodically (e.g. hourly); keep the
 * window longer than downstream consumers' deduplication needs the rows for auditing.
 */
export async function pruneOutbox(db: Kysely<unknown>, options: PruneOutboxOptions): Promise<{ deleted: number }> {
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
