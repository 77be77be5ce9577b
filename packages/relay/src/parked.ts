/**
 * Operator tools for parked outbox rows: rows Kafka refused for good (too large, unknown topic,
 * not authorised) after `maxAttempts`. A parked row holds back later rows of its topic and key
 * until it is re-queued (published in its place, before them) or discarded (they flow on).
 */
import { assertIdentifier, InvalidConfigError } from '@effectively/core';
import { sql, type Kysely } from 'kysely';

/** A parked row, as listed for an operator. */
export interface ParkedRow {
  id: string;
  eventId: string;
  topic: string;
  /** The key as UTF-8 when it decodes cleanly, else `hex:<bytes>`; null when keyless. */
  key: string | null;
  payloadBytes: number;
  attempts: number;
  lastError: string | null;
  createdAt: Date;
  /** Pending rows of the same topic and key waiting behind this one. */
  waitingBehind: number;
}

/** Which parked rows an operation applies to: some ids, or all of them (optionally of one topic). */
export type ParkedSelection = { ids: readonly string[] } | { all: true; topic?: string };

function schemaOf(options: { schema?: string }): string {
  return assertIdentifier(options.schema ?? 'effectively', 'schema');
}

function decodeKey(key: Buffer | null): string | null {
  if (key === null) return null;
  const text = key.toString('utf8');
  return Buffer.from(text, 'utf8').equals(key) && !text.includes('\u0000') ? text : `hex:${key.toString('hex')}`;
}

function selection(select: ParkedSelection): ReturnType<typeof sql> {
  if ('ids' in select) {
    if (!Array.isArray(select.ids) || select.ids.length === 0 || !select.ids.every((id) => typeof id === 'string' && /^[0-9]{1,19}$/.test(id))) {
      throw new InvalidConfigError(`ids must list outbox row ids (digits), got ${JSON.stringify(select.ids)}; see listParked for them.`);
    }
    return sql`id = ANY(${[...select.ids]}::bigint[])`;
  }
  if (select.all !== true) throw new InvalidConfigError('Pass { ids: [...] } or { all: true } to choose parked rows.');
  return select.topic === undefined ? sql`TRUE` : sql`topic = ${select.topic}`;
}

/** Lists parked rows, oldest first. */
export async function listParked<DB>(db: Kysely<DB>, options: { schema?: string; limit?: number } = {}): Promise<ParkedRow[]> {
  const outbox = sql.id(schemaOf(options), 'outbox');
  const limit = options.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new InvalidConfigError(`limit must be an integer between 1 and 100000, got ${JSON.stringify(limit)}.`);
  const { rows } = await sql<{ id: string; event_id: string; topic: string; message_key: Buffer | null; bytes: number; attempts: number; last_error: string | null; created_at: Date; waiting: string }>`
    SELECT p.id::text AS id, p.event_id, p.topic, p.message_key, COALESCE(octet_length(p.payload), 0) AS bytes, p.attempts, p.last_error, p.created_at,
      (SELECT count(*) FROM ${outbox} w WHERE w.status = 'pending' AND w.lane = p.lane AND w.topic = p.topic AND w.message_key = p.message_key AND w.id > p.id) AS waiting
    FROM ${outbox} p WHERE p.status = 'parked' ORDER BY p.id LIMIT ${limit}`.execute(db);
  return rows.map((r) => ({
    id: r.id,
    eventId: r.event_id,
    topic: r.topic,
    key: decodeKey(r.message_key),
    payloadBytes: Number(r.bytes),
    attempts: r.attempts,
    lastError: r.last_error,
    createdAt: r.created_at,
    waitingBehind: Number(r.waiting),
  }));
}

/**
 * Puts parked rows back in the queue with their attempts reset: the relay publishes them next,
 * ahead of the rows of their key that waited. Fix the cause first (raise the topic's
 * `max.message.bytes`, create the topic, grant the ACL). Returns the ids re-queued.
 */
export async function requeueParked<DB>(db: Kysely<DB>, select: ParkedSelection, options: { schema?: string } = {}): Promise<string[]> {
  const { rows } = await sql<{ id: string }>`
    UPDATE ${sql.id(schemaOf(options), 'outbox')}
    SET status = 'pending', attempts = 0, available_at = now()
    WHERE status = 'parked' AND ${selection(select)}
    RETURNING id::text AS id`.execute(db);
  return rows.map((r) => r.id).sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
}

/**
 * Deletes parked rows for good: they will never be published, and the rows that waited behind
 * them flow on. Returns the ids discarded.
 */
export async function discardParked<DB>(db: Kysely<DB>, select: ParkedSelection, options: { schema?: string } = {}): Promise<string[]> {
  const { rows } = await sql<{ id: string }>`
    DELETE FROM ${sql.id(schemaOf(options), 'outbox')}
    WHERE status = 'parked' AND ${selection(select)}
    RETURNING id::text AS id`.execute(db);
  return rows.map((r) => r.id).sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
}
