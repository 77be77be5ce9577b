import { sql, type Kysely, type Transaction } from 'kysely';
import { InvalidConfigError } from './errors';
import { untyped } from './database-type';
import { assertIdentifier } from './identifiers';
import { toOutboxRow, type OutboxRow } from './outbox-message';
import { currentTraceContext, type TraceContextProvider } from './trace-context';

export { EVENT_ID_HEADER, MAX_KEY_BYTES, MAX_EVENT_ID_BYTES } from './outbox-message';
/** The channel the writer notifies (payload: the schema name, never row data) and the relay listens on. */
export const OUTBOX_CHANNEL = 'effectively_outbox';

/** A JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * What an outbox message's value may be: bytes and strings (sent as they are), `null` (a
 * tombstone), or any other value, JSON-encoded: numbers, booleans, arrays, and objects, including
 * values typed by an `interface` (no index signature needed).
 */
export type OutboxValue = string | Uint8Array | number | boolean | object | null;

/**
 * Topic name → value type, for an outbox typed per topic: `createOutbox<{ 'orders.created': OrderCreated }>()`
 * accepts only those topics, each with its own value type.
 */
export type OutboxTopics = Record<string, OutboxValue>;

/**
 * An event to publish through the outbox: to `topic`, with a value of type `V`. Every field is
 * checked before anything is written (an `InvalidConfigError` naming the field; the caller's
 * transaction stays usable).
 */
export interface OutboxMessage<V extends OutboxValue = OutboxValue, Topic extends string = string> {
  /** A Kafka topic name: 1-249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`. */
  topic: Topic;
  /**
   * The Kafka key (at most 1,024 bytes); events with the same key reach Kafka in the commit order
   * of their transactions. A string (UTF-8; no lone surrogates) or bytes. `null`/absent: no key.
   */
  key?: string | Uint8Array | null;
  /**
   * The payload. Bytes (`Buffer`/`Uint8Array`) and strings are sent as they are (a string must be
   * valid Unicode: no lone surrogates); any other value is JSON-encoded (and gets
   * `content-type: application/json`). `null` publishes a tombstone. JSON is refused rather than
   * changed where `JSON.stringify` would lose data: BigInt, functions, symbols, NaN/±Infinity,
   * invalid Dates, `undefined` and holes in arrays, circular values, Map/Set/ArrayBuffer/WeakRef, Errors,
   * typed arrays other than Buffer; `undefined` object members are
   * left out and `toJSON` is honoured, as by `JSON.stringify`.
   */
  value: V;
  /** Kafka headers: non-empty names, string values; no NUL and no lone surrogates (stored as `jsonb`). `event-id` is set from `eventId`. */
  headers?: Record<string, string>;
  /**
   * The id downstream consumers deduplicate on (the `event-id` header). Default: a new UUIDv7.
   * Give your own when the same work may be written twice by design (e.g. derived from the
   * input, `${inputEventId}:budget-alert`): a second row with the same id is not written.
   * At most 512 UTF-8 bytes, no NUL, no lone surrogates.
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

/** The messages an outbox typed by `Topics` accepts: one {@link OutboxMessage} type per topic. */
export type OutboxMessageOf<Topics extends OutboxTopics> = Topics extends OutboxTopics ? { [Topic in keyof Topics & string]: OutboxMessage<Topics[Topic], Topic> }[keyof Topics & string] : never;

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

/**
 * Writes events to the outbox inside the caller's transaction. `Topics` (default: any topic, any
 * {@link OutboxValue}) narrows which topics and value types `publish` accepts; an untyped
 * `Outbox` (e.g. the consumer's `ctx.outbox`) can be assigned to an `Outbox<YourTopics>`.
 */
export interface Outbox<Topics extends OutboxTopics = OutboxTopics> {
  /** The schema holding the `outbox` table. */
  readonly schema: string;
  /**
   * Inserts the message(s) in `trx`, so they are published exactly when `trx` commits and never
   * if it rolls back (given a `Kysely` outside a transaction, it runs in a transaction of its own). Takes the transaction-scoped lock of each key's lane first (held until
   * commit), so rows of one key get ids in commit order: publish late in the transaction, and
   * in one call where you can (several calls that lock lanes in different orders can deadlock,
   * which Postgres resolves by aborting one transaction).
   *
   * @throws InvalidConfigError for any invalid field of any message (naming it), before the first
   *   statement: nothing of the call is written and `trx` stays usable.
   */
  publish<DB>(trx: Transaction<DB> | Kysely<DB>, messages: OutboxMessageOf<Topics> | ReadonlyArray<OutboxMessageOf<Topics>>): Promise<PublishResult>;
}

/**
 * An outbox whose `publish` checks and queues messages; `flush` writes everything queued with one
 * `publish` at the end of the transaction. The lane locks are then taken in one sorted statement
 * and held only from there to COMMIT: transactions that publish from several places (one handler
 * per event) neither serialise for long nor deadlock on lanes. The idempotent consumer gives its
 * handlers this as `ctx.outbox`.
 */
export interface OutboxBuffer<Topics extends OutboxTopics = OutboxTopics> {
  /**
   * Queues; resolves with the event ids, `inserted` = rows queued, `alreadyPublished` = [] (an
   * explicit event id already in the outbox is dropped at `flush`, which reports it).
   */
  readonly outbox: Outbox<Topics>;
  /** A position to roll back to (e.g. before a handler that may fail in its savepoint). */
  mark(): number;
  /** Drops what was queued after `mark`. */
  rollbackTo(mark: number): void;
  /** Writes everything queued in `trx` (call it last, just before commit) and empties the queue. */
  flush<DB>(trx: Transaction<DB> | Kysely<DB>): Promise<PublishResult>;
}

type Row = OutboxRow;

/**
 * Creates the outbox writer for the tables in `schema` (see migration `0004-outbox-lanes`).
 *
 * @throws InvalidIdentifierError for an unsafe schema name.
 */
export function createOutbox<Topics extends OutboxTopics = OutboxTopics>(options: OutboxOptions = {}): Outbox<Topics> {
  // Any typed outbox accepts a subset of what the untyped one does: the same writer serves it.
  return createWriter(options).outbox;
}

/** Creates an {@link OutboxBuffer} for the tables in `schema`; one per transaction. */
export function createOutboxBuffer<Topics extends OutboxTopics = OutboxTopics>(options: OutboxOptions = {}): OutboxBuffer<Topics> {
  const writer = createWriter(options);
  let queued: Row[] = [];
  const outbox: Outbox = Object.freeze({
    schema: writer.outbox.schema,
    publish<DB>(_trx: Transaction<DB> | Kysely<DB>, input: OutboxMessage | readonly OutboxMessage[]): Promise<PublishResult> {
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
    outbox: outbox,
    mark: () => queued.length,
    rollbackTo(mark: number): void {
      queued = queued.slice(0, mark);
    },
    async flush<DB>(trx: Transaction<DB> | Kysely<DB>): Promise<PublishResult> {
      const rows = queued;
      queued = [];
      return writer.writeRows(untyped(trx), rows);
    },
  });
}

function createWriter(options: OutboxOptions): { outbox: Outbox; prepare(input: OutboxMessage | readonly OutboxMessage[]): Row[]; writeRows(trx: Kysely<unknown>, rows: Row[]): Promise<PublishResult> } {
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
    // Every message is checked before anything is written: one bad message in a batch writes none.
    let many: boolean;
    try {
      many = Array.isArray(input);
    } catch (error) {
      throw new InvalidConfigError(`outbox message could not be read (${error instanceof Error ? error.message : String(error)}); pass plain data.`); // a revoked Proxy
    }
    if (many) return (input as readonly unknown[]).map((m, i) => toOutboxRow(m, `outbox message[${i}]`, trace));
    return [toOutboxRow(input, 'outbox message', trace)];
  };
  const writeRows = async (trx: Kysely<unknown>, rows: Row[]): Promise<PublishResult> => {
    if (rows.length === 0) return { eventIds: [], inserted: 0, alreadyPublished: [] };
    // Outside a transaction, make one: the lane lock must be held until the insert commits.
    if (!trx.isTransaction) return trx.transaction().execute((own) => write(own, rows));
    return write(trx, rows);
  };
  const outbox: Outbox = Object.freeze({
    schema,
    publish: <DB>(trx: Transaction<DB> | Kysely<DB>, input: OutboxMessage | readonly OutboxMessage[]): Promise<PublishResult> => {
      let rows: Row[];
      try {
        rows = prepare(input);
      } catch (error) {
        return Promise.reject(error);
      }
      return writeRows(untyped(trx), rows);
    },
  });
  return { outbox, prepare, writeRows };
}
