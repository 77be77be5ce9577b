import { sql, type Kysely, type Transaction } from 'kysely';
import { InvalidConfigError } from './errors';
import { assertIdentifier } from './identifiers';
import { currentTraceContext, isTraceparent, type TraceContextProvider } from './trace-context';
import { uuidv7 } from './uuid';

/** The header that carries an outbox row's event id to Kafka; consumers deduplicate on it. */
export const EVENT_ID_HEADER = 'event-id';
/** The channel the writer notifies (payload: the schema name, never row data) and the relay listens on. */
export const OUTBOX_CHANNEL = 'effectively_outbox';

/** A JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** An event to publish through the outbox. */
export interface OutboxMessage {
  topic: string;
  /** The Kafka key (at most 1,024 bytes); events with the same key reach Kafka in the commit order of their transactions. `null`/absent: no key. */
  key?: string | Uint8Array | null;
  /**
   * The payload. Bytes (`Buffer`/`Uint8Array`) and strings are sent as they are; any other value
   * is JSON-encoded (and gets `content-type: application/json`). `null` publishes a tombstone.
   */
  value: string | Uint8Array | JsonValue | Record<string, unknown> | null;
  headers?: Record<string, string>;
  /**
   * The id downstream consumers deduplicate on (the `event-id` header). Default: a new UUIDv7.
   * Give your own when the same work may be written twice by design (e.g. derived from the
   * input, `${inputEventId}:budget-alert`): a second row with the same id is not written.
   */
  eventId?: string;
}

/** What {@link Outbox.publish} did. */
export interface PublishResult {
  /** Event ids of the rows written, in the order given. */
  eventIds: string[];
  /** How many rows were written. */
  inserted: number;
  /**
   * Event ids not written because a row with the same id is still in the outbox (or came earlier
   * in the same call): kept once, not an error. The relay deletes rows once published, so this
   * deduplicates only until then; consumers deduplicate by `event-id` beyond that.
   */
  alreadyPublished: string[];
}

/** Options for {@link createOutbox}. */
export interface OutboxOptions {
  /** Schema holding effectively's tables; default `effectively`. */
  schema?: string;
  /**
   * Send one `NOTIFY` per transaction that publishes, so an idle relay wakes at once instead of
   * at its next poll. Default true. Costs a short global lock at commit; see the README for the
   * measured effect on writers and turn it off if writers matter more than idle latency.
   */
  notify?: boolean;
  /** Where the current trace context comes from; default {@link currentTraceContext}. */
  traceContext?: TraceContextProvider;
}

/** Writes events to the outbox inside the caller's transaction. */
export interface Outbox {
  /** The schema holding the `outbox` table. */
  readonly schema: string;
  /**
   * Inserts the message(s) in `trx`, so they are published exactly when `trx` commits and never
   * if it rolls back (given a `Kysely` outside a transaction, it runs in a transaction of its own). Takes the transaction-scoped lock of each key's lane first (held until
   * commit), so rows of one key get ids in commit order: publish late in the transaction, and
   * in one call where you can (several calls that lock lanes in different orders can deadlock,
   * which Postgres resolves by aborting one transaction).
   *
   * @throws InvalidConfigError for an invalid topic, event id or header, before touching the database.
   */
  publish(trx: Transaction<unknown> | Kysely<unknown>, messages: OutboxMessage | readonly OutboxMessage[]): Promise<PublishResult>;
}

/**
 * An outbox whose `publish` checks and queues messages; `flush` writes everything queued with one
 * `publish` at the end of the transaction. The lane locks are then taken in one sorted statement
 * and held only from there to COMMIT: transactions that publish from several places (one handler
 * per event) neither serialise for long nor deadlock on lanes. The idempotent consumer gives its
 * handlers this as `ctx.outbox`.
 */
export interface OutboxBuffer {
  /**
   * Queues; resolves with the event ids, `inserted` = rows queued, `alreadyPublished` = [] (an
   * explicit event id already in the outbox is dropped at `flush`, which reports it).
   */
  readonly outbox: Outbox;
  /** A position to roll back to (e.g. before a handler that may fail in its savepoint). */
  mark(): number;
  /** Drops what was queued after `mark`. */
  rollbackTo(mark: number): void;
  /** Writes everything queued in `trx` (call it last, just before commit) and empties the queue. */
  flush(trx: Transaction<unknown> | Kysely<unknown>): Promise<PublishResult>;
}

const TOPIC = /^[a-zA-Z0-9._-]{1,249}$/;
/** Longest key accepted: with the topic it must fit a btree entry of the outbox's blocking index (2,704 bytes). */
export const MAX_KEY_BYTES = 1024;

interface Row {
  eventId: string;
  topic: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

function bytes(value: string | Uint8Array): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function toRow(m: OutboxMessage, trace: TraceContextProvider): Row {
  if (typeof m !== 'object' || m === null) throw new InvalidConfigError(`An outbox message must be an object { topic, key, value }, got ${JSON.stringify(m)}.`);
  if (typeof m.topic !== 'string' || !TOPIC.test(m.topic) || m.topic === '.' || m.topic === '..') {
    throw new InvalidConfigError(`Outbox message topic ${JSON.stringify(m.topic)} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -).`);
  }
  const eventId = m.eventId ?? uuidv7();
  if (typeof eventId !== 'string' || eventId === '' || Buffer.byteLength(eventId) > 512 || eventId.includes('\u0000')) {
    throw new InvalidConfigError(`Outbox message eventId must be a non-empty string of at most 512 bytes without NUL, got ${JSON.stringify(eventId)}.`);
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(m.headers ?? {})) {
    if (typeof value !== 'string') throw new InvalidConfigError(`Outbox header ${JSON.stringify(name)} must be a string, got ${typeof value}.`);
    if (name === EVENT_ID_HEADER) throw new InvalidConfigError(`The "${EVENT_ID_HEADER}" header is set from eventId; pass eventId instead.`);
    headers[name] = value;
  }
  let value: Buffer | null;
  if (m.value === null) value = null;
  else if (typeof m.value === 'string' || m.value instanceof Uint8Array) value = bytes(m.value);
  else if (m.value === undefined) throw new InvalidConfigError('Outbox message value is missing; pass null for a tombstone.');
  else {
    value = Buffer.from(JSON.stringify(m.value), 'utf8');
    headers['content-type'] ??= 'application/json';
  }
  if (headers['traceparent'] === undefined) {
    const context = trace();
    if (context !== undefined && isTraceparent(context.traceparent)) {
      headers['traceparent'] = context.traceparent;
      if (context.tracestate !== undefined && context.tracestate !== '') headers['tracestate'] = context.tracestate;
    }
  }
  const key = m.key === null || m.key === undefined ? null : bytes(m.key);
  if (key !== null && key.length > MAX_KEY_BYTES) {
    throw new InvalidConfigError(`Outbox message key is ${key.length} bytes; keys of at most ${MAX_KEY_BYTES} bytes are supported (they are indexed to keep per-key order). Use a shorter key, e.g. a hash of it.`);
  }
  return { eventId, topic: m.topic, key, value, headers };
}

/**
 * Creates the outbox writer for the tables in `schema` (see migration `0004-outbox-lanes`).
 *
 * @throws InvalidIdentifierError for an unsafe schema name.
 */
export function createOutbox(options: OutboxOptions = {}): Outbox {
  return createWriter(options).outbox;
}

/** Creates an {@link OutboxBuffer} for the tables in `schema`; one per transaction. */
export function createOutboxBuffer(options: OutboxOptions = {}): OutboxBuffer {
  const writer = createWriter(options);
  let queued: Row[] = [];
  const outbox: Outbox = Object.freeze({
    schema: writer.outbox.schema,
    publish(_trx: Transaction<unknown> | Kysely<unknown>, input: OutboxMessage | readonly OutboxMessage[]): Promise<PublishResult> {
      try {
        const rows = writer.prepare(input);
        queued.push(...rows);
        return Promise.resolve({ eventIds: rows.map((r) => r.eventId), inserted: rows.length, alreadyPublished: [] });
      } catch (error) {
        return Promise.reject(error);
      }
    },
  });
  return Object.freeze({
    outbox,
    mark: () => queued.length,
    rollbackTo(mark: number): void {
      queued = queued.slice(0, mark);
    },
    async flush(trx: Transaction<unknown> | Kysely<unknown>): Promise<PublishResult> {
      const rows = queued;
      queued = [];
      return writer.writeRows(trx, rows);
    },
  });
}

function createWriter(options: OutboxOptions): { outbox: Outbox; prepare(input: OutboxMessage | readonly OutboxMessage[]): Row[]; writeRows(trx: Transaction<unknown> | Kysely<unknown>, rows: Row[]): Promise<PublishResult> } {
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const notify = options.notify ?? true;
  if (typeof notify !== 'boolean') throw new InvalidConfigError(`notify must be true or false, got ${JSON.stringify(notify)}.`);
  const trace = options.traceContext ?? currentTraceContext;
  if (typeof trace !== 'function') throw new InvalidConfigError('traceContext must be a function returning { traceparent, tracestate } or undefined.');
  const table = sql.id(schema, 'outbox');
  const laneOf = sql.id(schema, 'outbox_lane');
  const lockSpace = `effectively.outbox:${schema}`;

  async function write(trx: Kysely<unknown>, rows: Row[]): Promise<PublishResult> {
    const keys = [...new Map(rows.filter((r) => r.key !== null).map((r) => [(r.key as Buffer).toString('hex'), r.key as Buffer])).values()];
    if (keys.length > 0 || notify) {
      // Lanes locked in ascending order (volatile functions in the select list run after ORDER BY).
      await sql`
        SELECT ${notify ? sql`pg_notify(${OUTBOX_CHANNEL}, ${schema})` : sql`NULL`} AS notified,
          (SELECT count(*) FROM (
            SELECT pg_advisory_xact_lock(hashtext(${lockSpace}), lane) FROM (
              SELECT DISTINCT ${laneOf}(k, NULL) AS lane FROM unnest(${keys}::bytea[]) AS k) lanes
            ORDER BY lane) locked) AS lanes`.execute(trx);
    }
    const result = await sql<{ event_id: string }>`
      INSERT INTO ${table} (event_id, topic, message_key, payload, headers)
      SELECT * FROM unnest(${rows.map((r) => r.eventId)}::text[], ${rows.map((r) => r.topic)}::text[],
        ${rows.map((r) => r.key)}::bytea[], ${rows.map((r) => r.value)}::bytea[], ${rows.map((r) => JSON.stringify(r.headers))}::jsonb[])
      ON CONFLICT (event_id) DO NOTHING
      RETURNING event_id`.execute(trx);
    const inserted = new Set(result.rows.map((r) => r.event_id));
    // A repeated id in the same call counts as already there from its second occurrence on.
    const firsts = new Set<string>();
    const alreadyPublished = rows.map((r) => r.eventId).filter((id) => (inserted.has(id) && !firsts.has(id) ? (firsts.add(id), false) : true));
    return { eventIds: rows.map((r) => r.eventId), inserted: inserted.size, alreadyPublished };
  }

  const prepare = (input: OutboxMessage | readonly OutboxMessage[]): Row[] => {
    const messages: readonly OutboxMessage[] = Array.isArray(input) ? input : [input as OutboxMessage];
    return messages.map((m) => toRow(m, trace));
  };
  const writeRows = async (trx: Transaction<unknown> | Kysely<unknown>, rows: Row[]): Promise<PublishResult> => {
    if (rows.length === 0) return { eventIds: [], inserted: 0, alreadyPublished: [] };
    // Outside a transaction, make one: the lane lock must be held until the insert commits.
    if (!trx.isTransaction) return trx.transaction().execute((own) => write(own, rows));
    return write(trx, rows);
  };
  const outbox: Outbox = Object.freeze({
    schema,
    publish: (trx: Transaction<unknown> | Kysely<unknown>, input: OutboxMessage | readonly OutboxMessage[]): Promise<PublishResult> => {
      let rows: Row[];
      try {
        rows = prepare(input);
      } catch (error) {
        return Promise.reject(error);
      }
      return writeRows(trx, rows);
    },
  });
  return { outbox, prepare, writeRows };
}
