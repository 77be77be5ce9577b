import { sql, type Kysely, type Transaction } from 'kysely';
import { assertIdentifier, untyped } from '@effectively/core';
import { storableText } from './storable-text';
import { idKey } from './classify';
import type { IdOrigin } from './event-id';

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

/**
 * The SQL of the idempotent consumer, one method per statement. Every statement is one round
 * trip whatever the number of events (arrays through `unnest`), and every identifier has been
 * checked by `assertIdentifier` before it gets here.
 */
export class ProcessedEventStore {
  private readonly events;
  private readonly fences;

  constructor(
    schema: string,
    private readonly group: string,
  ) {
    this.events = sql.id(schema, 'processed_events');
    this.fences = sql.id(schema, 'partition_fences');
  }

  /** Bounds the transaction: lock waits, statements, and idling (e.g. a frozen process). */
  async configure(trx: Db, lockTimeoutMs: number, statementTimeoutMs: number): Promise<void> {
    await sql`SELECT set_config('lock_timeout', ${`${lockTimeoutMs}ms`}, true),
                     set_config('statement_timeout', ${`${statementTimeoutMs}ms`}, true),
                     set_config('idle_in_transaction_session_timeout', ${`${statementTimeoutMs * 2}ms`}, true)`.execute(trx);
  }

  /** Claims `rows` in one statement; returns the {@link idKey}s that were new (the rest were already there). */
  async claim(trx: Db, rows: ClaimRow[]): Promise<Set<string>> {
    if (rows.length === 0) return new Set();
    const result = await sql<{ id_origin: IdOrigin; event_id: string }>`
      INSERT INTO ${this.events} (consumer_group, id_origin, event_id, payload_hash, topic, partition, kafka_offset, status, error)
      SELECT ${this.group}, u.id_origin, u.event_id, u.payload_hash, u.topic, u.partition, u.kafka_offset, u.status, u.error
      FROM unnest(${rows.map((r) => r.origin)}::text[], ${rows.map((r) => r.eventId)}::text[], ${rows.map((r) => r.payloadHash)}::text[], ${rows.map((r) => r.topic)}::text[],
                  ${rows.map((r) => r.partition)}::int[], ${rows.map((r) => r.offset)}::bigint[], ${rows.map((r) => r.status)}::text[],
                  ${rows.map((r) => (r.error === null ? null : storableText(r.error)))}::text[])
           AS u(id_origin, event_id, payload_hash, topic, partition, kafka_offset, status, error)
      ON CONFLICT (consumer_group, id_origin, event_id) DO NOTHING
      RETURNING id_origin, event_id`.execute(trx);
    return new Set(result.rows.map((r) => idKey(r.id_origin, r.event_id)));
  }

  /** Payload hashes stored for already-processed keys (to spot conflicting duplicates), by {@link idKey}. */
  async storedHashes(trx: Db, keys: EventKey[]): Promise<Map<string, string>> {
    if (keys.length === 0) return new Map();
    const result = await sql<{ id_origin: IdOrigin; event_id: string; payload_hash: string }>`
      SELECT p.id_origin, p.event_id, p.payload_hash FROM ${this.events} p
      JOIN unnest(${keys.map((k) => k.origin)}::text[], ${keys.map((k) => k.eventId)}::text[]) AS k(id_origin, event_id)
        ON p.id_origin = k.id_origin AND p.event_id = k.event_id
      WHERE p.consumer_group = ${this.group}`.execute(trx);
    return new Map(result.rows.map((r) => [idKey(r.id_origin, r.event_id), r.payload_hash]));
  }

  /** Removes claims of events whose handling did not settle in this transaction. */
  async release(trx: Db, keys: EventKey[]): Promise<void> {
    if (keys.length === 0) return;
    await sql`DELETE FROM ${this.events} p USING unnest(${keys.map((k) => k.origin)}::text[], ${keys.map((k) => k.eventId)}::text[]) AS k(id_origin, event_id)
              WHERE p.consumer_group = ${this.group} AND p.id_origin = k.id_origin AND p.event_id = k.event_id`.execute(trx);
  }

  /** Marks a claimed event as dead-lettered, with the error and the attempts spent. */
  async markDeadLettered(trx: Db, key: EventKey, error: string, attempts: number): Promise<void> {
    await sql`UPDATE ${this.events} SET status = 'dead_lettered', error = ${storableText(error)}, attempts = ${attempts}
              WHERE consumer_group = ${this.group} AND id_origin = ${key.origin} AND event_id = ${key.eventId}`.execute(trx);
  }

  /** Takes the partition for `memberId`: a new, higher epoch that older owners no longer match. */
  async takePartition(db: Db, topic: string, partition: number, memberId: string): Promise<string> {
    const result = await sql<{ epoch: string }>`
      INSERT INTO ${this.fences} (consumer_group, topic, partition, epoch, member_id)
      VALUES (${this.group}, ${topic}, ${partition}, 1, ${memberId})
      ON CONFLICT (consumer_group, topic, partition)
      DO UPDATE SET epoch = ${this.fences}.epoch + 1, member_id = EXCLUDED.member_id, updated_at = now()
      RETURNING epoch`.execute(db);
    return (result.rows[0] as { epoch: string }).epoch;
  }

  /** Inside the transaction: true when this member's epoch is still the partition's (locks the row until commit). */
  async holdsPartition(trx: Db, topic: string, partition: number, epoch: string): Promise<boolean> {
    const result = await sql`
      UPDATE ${this.fences} SET updated_at = now()
      WHERE consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition} AND epoch = ${epoch}
      RETURNING 1`.execute(trx);
    return result.rows.length === 1;
  }
}

/**
 * Deletes processed-event records older than `olderThanMs`, `batchSize` rows per statement
 * (short transactions, no long locks), until none are left. Returns how many were deleted.
 *
 * The window MUST exceed the longest replay you may ever do (an offset reset to earliest,
 * topic retention, a consumer group whose offsets expired): an event redelivered after its
 * record was pruned is applied again.
 */
export async function pruneProcessedEvents<DB>(database: Kysely<DB>, options: { schema?: string; olderThanMs: number; batchSize?: number; maxBatches?: number }): Promise<number> {
  const db = untyped(database);
  const table = sql.id(assertIdentifier(options.schema ?? 'effectively', 'schema'), 'processed_events');
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
