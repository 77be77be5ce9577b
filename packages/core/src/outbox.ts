import { sql, type Kysely, type Transaction } from 'kysely';
import { InvalidConfigError } from './errors';
import { assertIdentifier } from './identifiers';

/** An event to publish through the outbox. */
export interface OutboxMessage {
  /**
   * The id downstream consumers deduplicate on (sent as the `event-id` header). Derive it from
   * the input that caused it (e.g. `${inputEventId}:budget-alert`), never at random, so a
   * re-run handler writes the same id and the unique index keeps one row.
   */
  eventId: string;
  topic: string;
  key?: string | Buffer | null;
  /** The payload; objects are JSON-encoded. `null` publishes a tombstone. */
  value: string | Buffer | Record<string, unknown> | null;
  headers?: Record<string, string>;
}

/** What {@link OutboxWriter.enqueue} did: rows written, and ids that were already there. */
export interface EnqueueResult {
  inserted: number;
  /** Event ids already in the outbox (a re-run of the same work): kept once, not an error. */
  alreadyEnqueued: string[];
}

/** Writes outbox rows inside the caller's transaction. */
export interface OutboxWriter {
  /** The schema holding the `outbox` table. */
  readonly schema: string;
  /**
   * Inserts `messages` in the given transaction, so they commit (and are later published)
   * exactly when the caller's effects commit. One multi-row statement.
   */
  enqueue(trx: Transaction<unknown> | Kysely<unknown>, messages: OutboxMessage[]): Promise<EnqueueResult>;
}

function toBuffer(value: OutboxMessage['value'] | OutboxMessage['key']): Buffer | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return value;
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** Creates an {@link OutboxWriter} for the outbox table in `schema`. */
export function createOutboxWriter(options: { schema: string }): OutboxWriter {
  const schema = assertIdentifier(options.schema, 'schema');
  return Object.freeze({
    schema,
    async enqueue(trx: Transaction<unknown> | Kysely<unknown>, messages: OutboxMessage[]): Promise<EnqueueResult> {
      if (messages.length === 0) return { inserted: 0, alreadyEnqueued: [] };
      for (const m of messages) {
        if (typeof m.eventId !== 'string' || m.eventId === '' || Buffer.byteLength(m.eventId) > 512) {
          throw new InvalidConfigError(`Outbox message eventId must be a non-empty string of at most 512 bytes, got ${JSON.stringify(m.eventId)}.`);
        }
        if (typeof m.topic !== 'string' || !/^[a-zA-Z0-9._-]{1,249}$/.test(m.topic)) {
          throw new InvalidConfigError(`Outbox message topic ${JSON.stringify(m.topic)} is not a valid Kafka topic name.`);
        }
      }
      const rows = messages.map((m) => sql`(${m.eventId}, ${m.topic}, ${toBuffer(m.key)}, ${toBuffer(m.value)}, ${JSON.stringify(m.headers ?? {})}::jsonb)`);
      const result = await sql<{ event_id: string }>`
        INSERT INTO ${sql.id(schema, 'outbox')} (event_id, topic, message_key, payload, headers)
        VALUES ${sql.join(rows)}
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id`.execute(trx);
      const inserted = new Set(result.rows.map((r) => r.event_id));
      return { inserted: inserted.size, alreadyEnqueued: messages.map((m) => m.eventId).filter((id) => !inserted.has(id)) };
    },
  });
}
