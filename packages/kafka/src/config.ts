import { assertIdentifier, InvalidConfigError, NoopMetrics, pgQuery, retyped, loggerOption, untyped, type Logger, type Metrics, type Outbox, type PgQuery, type TraceContextProvider } from '@effectively/core';
import type { Kysely, Transaction } from 'kysely';
import { createKafkajsConsumer, type ConsumerClient, type KafkaClientSettings, type RawMessage } from './kafka-adapter';
import { createPlatformaticConsumer } from './platformatic-adapter';
import type { PlatformaticClientOptions } from './platformatic-options';
import type { EventIdSource } from './event-id';
import type { ConsumerHooks } from './hooks';
import { isStorableText } from './storable-text';

/** An event handed to the handler: the decoded value plus where it came from. */
export interface ConsumedEvent<T> {
  id: string;
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  /** The decoded payload (`null` for a tombstone when tombstones are handled). */
  value: T;
  headers: RawMessage['headers'];
  timestamp: string;
}

/** What a handler gets besides the event; `DB` is the database type of the consumer's `db`. */
export interface HandlerContext<DB = unknown> {
  /** The transaction the event is claimed in: write your effects through it. */
  trx: Transaction<DB>;
  /**
   * node-postgres' `query(text, values)` on that same transaction, for code not written with
   * Kysely: `await query('UPDATE accounts SET balance = balance + $1 WHERE id = $2', [amount, id])`.
   * Its writes commit with the event's claim and roll back with it, like those through `trx`.
   */
  query: PgQuery;
  /**
   * Events to emit, committed with this transaction (and dropped if this event's work rolls
   * back). Rows are checked at once and written in one statement just before COMMIT, so lane
   * locks are held only from there; the result's `alreadyPublished` is always empty (an explicit
   * `eventId` already in the outbox is kept once at the write).
   */
  outbox: Outbox;
  /** A logger bound to topic, partition, offset and event id. */
  logger: Logger;
  /** 1 on first delivery, 2 on the first retry, … */
  attempt: number;
}

/** Handles one event inside its transaction. Throwing rolls back this event's effects only. */
export type EventHandler<T, DB = unknown> = (event: ConsumedEvent<T>, ctx: HandlerContext<DB>) => Promise<void>;

/**
 * Handles all newly claimed events of a chunk at once (e.g. one multi-row upsert). If it
 * throws, the chunk falls back to {@link EventHandler} one event at a time, each in a savepoint.
 */
export type BatchHandler<T, DB = unknown> = (events: Array<ConsumedEvent<T>>, ctx: Omit<HandlerContext<DB>, 'attempt' | 'logger'> & { logger: Logger }) => Promise<void>;

/** What to do with an event whose handler keeps failing. */
export type FailurePolicy =
  /** Record it as dead-lettered and publish the original to the dead-letter topic, in one transaction; move on. */
  | 'dead-letter'
  /** Stop the partition at this event (strict ordering); keep retrying with capped backoff until it succeeds or an operator acts. */
  | 'halt';

/**
 * The idempotent consumer's options. `T` is the decoded event value, `DB` the Kysely database type
 * of `db`; handlers get a `Transaction<DB>`. Give both type arguments or neither (TypeScript
 * infers none of them once one is given): `new IdempotentConsumer<OrderCreated, DB>({ db, … })`.
 */
export interface IdempotentConsumerOptions<T = unknown, DB = unknown> {
  /** Kafka bootstrap addresses. */
  brokers: string[];
  /** Consumer group; also the deduplication scope. */
  groupId: string;
  topics: string[];
  /** Kysely over the Postgres that holds the effects and the `processed_events` table. */
  db: Kysely<DB>;
  /** Schema with effectively's tables; default `effectively`. */
  schema?: string;
  /** The per-event handler (required). */
  handler: EventHandler<T, DB>;
  /** Optional whole-chunk handler for throughput; see {@link BatchHandler}. */
  batchHandler?: BatchHandler<T, DB>;
  /** `batch` (default): one transaction per chunk of up to `batchSize`; `event`: one per event, calling `handler` (never `batchHandler`) without a savepoint. */
  mode?: 'batch' | 'event';
  /** Most events per transaction in batch mode; default 500, at most 10,000. */
  batchSize?: number;
  /** Turns a message value into the handler's value; default JSON. Throwing dead-letters the message (a malformed payload does not get better by retrying). */
  decode?: (value: Buffer, message: RawMessage) => T;
  /** `dead-letter` (default) or `handle` (the handler gets `value: null`). */
  tombstones?: 'dead-letter' | 'handle';
  /** Where event ids come from; default header `event-id`. */
  eventId?: EventIdSource;
  /** Longest accepted event id in bytes; default 255, at most 512. */
  maxEventIdBytes?: number;
  /** Handler attempts before the failure policy applies; default 5. */
  maxAttempts?: number;
  /**
   * Delay before the first retry of a failed (thrown or timed-out) handler, measured from the
   * failure to the start of the next attempt; doubles each attempt up to `maxRetryDelayMs`
   * (no jitter): 200, 400, 800 ms … by default.
   */
  retryDelayMs?: number;
  /** Longest retry delay; default 30 s. */
  maxRetryDelayMs?: number;
  onFailure?: FailurePolicy;
  /** Topic the dead-letter messages go to through the outbox; default `<topic>.dlq`. */
  deadLetterTopic?: (topic: string) => string;
  /** Same id with a different payload: `report` (default: metric + warning, skipped) or `dead-letter` (also publish it to the dead-letter topic). */
  onConflict?: 'report' | 'dead-letter';
  /**
   * Time limit of one handler (or batch handler, or `beforeDbCommit` hook) run; default 30 s.
   * A handler that exceeds it has failed that attempt: its transaction is given up (its
   * connection ended, so no statement of it can run later) and it is retried like a thrown
   * error, or dead-lettered after `maxAttempts`. A batch handler that exceeds it is not retried
   * as a batch: its events run one per transaction.
   */
  handlerTimeoutMs?: number;
  /** `lock_timeout` inside the transaction; default 5 s. */
  lockTimeoutMs?: number;
  /** `statement_timeout` inside the transaction; default 30 s. */
  statementTimeoutMs?: number;
  /**
   * Record each partition's owner epoch and check it in every transaction; default true. A
   * transaction of a member that lost its partition either ends before the new owner's epoch is
   * recorded (which waits for it, at most `takeoverTimeoutMs`) or is refused; see the README.
   */
  fencing?: boolean;
  /**
   * How long a member taking over a partition waits for a transaction of the previous owner
   * that still holds the partition (a frozen or slow member) before ending that session
   * (`pg_terminate_backend`; its work rolls back and is redone here); default 10 s. Only that
   * partition waits; the member's other partitions flow meanwhile.
   */
  takeoverTimeoutMs?: number;
  /**
   * Longest time a fetch waits at the broker for new records (kafkajs `maxWaitTimeInMs`);
   * default 500 ms. It bounds how soon a partition paused for a retry is fetched again: the
   * consumer resumes it this much (plus 250 ms) before the retry is due and waits out the rest.
   */
  fetchMaxWaitMs?: number;
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  rebalanceTimeoutMs?: number;
  maxBytesPerPartition?: number;
  /**
   * Longest time settled work waits before its Kafka offset commit within a long fetched batch;
   * default 1000 ms. Offsets are always committed at the end of each fetched batch and never
   * before the database commit; 0 commits after every chunk (slower: one Kafka round trip each).
   */
  offsetCommitIntervalMs?: number;
  /**
   * Partitions whose chunks run at once, each in its own transaction on its own pooled
   * connection; default 4 (at most the partitions assigned run at once). Each partition stays in
   * order. In `npm run bench` on 2 shared cores, 4 gave 1.30-1.54× the throughput of 1 (per-event
   * and batch mode); give `db`'s pool at least this many connections plus one for the consumer's
   * bookkeeping (plus what handlers use outside `trx`; `createDatabase`'s default pool of 10
   * does), or chunks wait for one.
   */
  partitionsConsumedConcurrently?: number;
  fromBeginning?: boolean;
  clientId?: string;
  logger?: Logger;
  metrics?: Metrics;
  /**
   * Where `ctx.outbox` reads the trace context rows record; default: the consumer's `process`
   * span when OpenTelemetry is tracing, else the incoming record's `traceparent`.
   */
  traceContext?: TraceContextProvider;
  /** Lifecycle hooks: observation and fault injection at the dangerous points. */
  hooks?: ConsumerHooks;
  /** Stop cleanly on SIGTERM/SIGINT; default false. */
  handleSignals?: boolean;
  /**
   * Run the consumer's per-event statements (the single-event claim, the attempt record written
   * before a handler runs alone) as named prepared statements, parsed and planned once per
   * connection instead of per event; default true. Needs node-postgres under Kysely's
   * `PostgresDialect` (what `createDatabase` makes). Set false with another Kysely driver, or
   * behind a pooler that does not keep protocol-level prepared statements (PgBouncer in
   * transaction mode before 1.21, or without `max_prepared_statements`).
   */
  preparedStatements?: boolean;
  /**
   * When the schema's dedup retention is by generations (`enableGenerations`), run
   * `rotateProcessedEvents` from this consumer, every quarter of the rotation interval (at most
   * every minute); default true. Any number of consumers (and a cron job) may rotate at once.
   * Set false to rotate only from outside (`effectively retention rotate`).
   */
  rotateGenerations?: boolean;
  /** Bound for `stop()`; default 30 s. */
  shutdownTimeoutMs?: number;
  /** Extra kafkajs client settings (ssl, sasl), for `client: 'kafkajs'`. */
  kafka?: KafkaClientSettings['kafka'];
  /** Extra @platformatic/kafka client settings (tls, sasl), for `client: 'platformatic'`. */
  platformatic?: PlatformaticClientOptions;
  /**
   * The Kafka client: `'kafkajs'` (default), `'platformatic'` (@platformatic/kafka, an optional
   * peer dependency needing Node.js >= 22.22; loaded only when chosen, by `start()`), or a
   * function creating any {@link ConsumerClient} (a wrapper, another client).
   */
  client?: ClientChoice;
}

/** Which Kafka client a consumer uses; see {@link IdempotentConsumerOptions.client}. */
export type ClientChoice = 'kafkajs' | 'platformatic' | ((settings: KafkaClientSettings) => ConsumerClient);

/** What the chunk processor passes; the handler's `query` is added around it. */
type ProcessorContext = Omit<HandlerContext, 'query'>;

/** Options after validation and defaults; frozen. The database type is set aside here (see `untyped`): the consumer's own SQL needs none. */
export type ResolvedOptions<T> = Readonly<
  Required<Omit<IdempotentConsumerOptions<T, unknown>, 'handler' | 'batchHandler' | 'kafka' | 'platformatic' | 'client' | 'hooks' | 'decode' | 'traceContext'>> & {
    handler: (event: ConsumedEvent<T>, ctx: ProcessorContext) => Promise<void>;
    batchHandler: ((events: Array<ConsumedEvent<T>>, ctx: Omit<ProcessorContext, 'attempt'>) => Promise<void>) | undefined;
    traceContext: TraceContextProvider | undefined;
    kafka: KafkaClientSettings['kafka'];
    platformatic: PlatformaticClientOptions | undefined;
    client: (settings: KafkaClientSettings) => ConsumerClient;
    hooks: ConsumerHooks;
    decode: (value: Buffer, message: RawMessage) => T;
  }
>;

function positiveInt(value: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw new InvalidConfigError(`${name} must be an integer between 1 and ${max}, got ${JSON.stringify(value)}.`);
  }
  return value;
}

function nonNegativeInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw new InvalidConfigError(`${name} must be an integer of at least 0, got ${JSON.stringify(value)}.`);
  return value;
}

/**
 * Partitions in flight by default: 4 (Postgres and the consumer share the machine's cores; on
 * 2 shared cores 4 gave 1.30-1.54× the throughput of 1, 8 little more), within the default pool
 * of 10 with the bookkeeping connection.
 */
export const DEFAULT_PARTITIONS_IN_FLIGHT = 4;

const FORBIDDEN_KAFKAJS = ['autoCommit', 'autoCommitInterval', 'autoCommitThreshold', 'eachBatchAutoResolve', 'eachMessage', 'eachBatch'];

/** Whether `value` is a Kafka topic name Kafka and the outbox accept. */
function isTopicName(value: unknown): value is string {
  return typeof value === 'string' && /^[a-zA-Z0-9._-]{1,249}$/.test(value) && value !== '.' && value !== '..';
}

/**
 * Validates options once, up front, with messages that say what to fix, and returns a frozen
 * copy with defaults. The caller's object is not changed.
 */
export function resolveOptions<T, DB>(options: IdempotentConsumerOptions<T, DB>): ResolvedOptions<T> {
  const raw = options as unknown as Record<string, unknown>;
  for (const key of FORBIDDEN_KAFKAJS) {
    if (key in raw || (options.kafka !== undefined && key in (options.kafka as Record<string, unknown>))) {
      throw new InvalidConfigError(
        `"${key}" cannot be set: the idempotent consumer commits offsets itself, only after the database transaction commits. Auto-commit or auto-resolve would commit offsets for work that may roll back.`,
      );
    }
  }
  if (!Array.isArray(options.brokers) || options.brokers.length === 0) throw new InvalidConfigError('brokers must list at least one host:port.');
  if (typeof options.groupId !== 'string' || options.groupId.trim() === '' || options.groupId.length > 249 || !isStorableText(options.groupId)) {
    throw new InvalidConfigError('groupId must be a non-empty string of at most 249 characters without NUL or lone surrogates; it is also the deduplication scope (stored as Postgres text).');
  }
  if (!Array.isArray(options.topics) || options.topics.length === 0 || !options.topics.every((t) => isTopicName(t))) {
    throw new InvalidConfigError('topics must list at least one valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -, not "." or "..").');
  }
  const deadLetterTopic = options.deadLetterTopic ?? ((topic: string) => `${topic}.dlq`);
  if (typeof deadLetterTopic !== 'function') throw new InvalidConfigError('deadLetterTopic must be a function (topic) => dead-letter topic name.');
  for (const topic of options.topics) {
    const dlq: unknown = deadLetterTopic(topic);
    // Checked now: a dead letter the outbox refuses would fail its chunk on every retry.
    if (!isTopicName(dlq)) {
      throw new InvalidConfigError(`The dead-letter topic of "${topic}" would be ${JSON.stringify(dlq)}, not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -); pass deadLetterTopic to name a valid one.`);
    }
  }
  if (typeof options.handler !== 'function') throw new InvalidConfigError('handler is required: (event, { trx, query, outbox, logger, attempt }) => Promise<void>.');
  if (options.db === undefined) throw new InvalidConfigError('db (a Kysely instance over Postgres) is required.');
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const mode = options.mode ?? 'batch';
  if (mode !== 'batch' && mode !== 'event') throw new InvalidConfigError(`mode must be "batch" or "event", got ${JSON.stringify(mode)}.`);
  const batchSize = mode === 'event' ? 1 : positiveInt(options.batchSize ?? 500, 'batchSize', 10_000);
  const sessionTimeoutMs = positiveInt(options.sessionTimeoutMs ?? 30_000, 'sessionTimeoutMs');
  const heartbeatIntervalMs = positiveInt(options.heartbeatIntervalMs ?? Math.min(3_000, Math.floor(sessionTimeoutMs / 3)), 'heartbeatIntervalMs');
  if (heartbeatIntervalMs * 3 > sessionTimeoutMs) {
    throw new InvalidConfigError(`heartbeatIntervalMs (${heartbeatIntervalMs}) must be at most a third of sessionTimeoutMs (${sessionTimeoutMs}), or one missed heartbeat ends the session.`);
  }
  const maxEventIdBytes = positiveInt(options.maxEventIdBytes ?? 255, 'maxEventIdBytes', 512);
  const handlerTimeoutMs = positiveInt(options.handlerTimeoutMs ?? 30_000, 'handlerTimeoutMs');
  const statementTimeoutMs = positiveInt(options.statementTimeoutMs ?? 30_000, 'statementTimeoutMs');
  const lockTimeoutMs = positiveInt(options.lockTimeoutMs ?? 5_000, 'lockTimeoutMs');
  const onFailure = options.onFailure ?? 'dead-letter';
  if (onFailure !== 'dead-letter' && onFailure !== 'halt') throw new InvalidConfigError(`onFailure must be "dead-letter" or "halt", got ${JSON.stringify(onFailure)}.`);
  const onConflict = options.onConflict ?? 'report';
  if (onConflict !== 'report' && onConflict !== 'dead-letter') throw new InvalidConfigError(`onConflict must be "report" or "dead-letter".`);
  const tombstones = options.tombstones ?? 'dead-letter';
  if (tombstones !== 'dead-letter' && tombstones !== 'handle') throw new InvalidConfigError(`tombstones must be "dead-letter" or "handle".`);
  const eventId = options.eventId ?? { header: 'event-id' };
  // Handlers get their transaction back as the caller's Transaction<DB>.
  const handler = options.handler;
  const batchHandler = options.batchHandler;
  if ('header' in eventId && (typeof eventId.header !== 'string' || eventId.header === '')) throw new InvalidConfigError('eventId.header must name a header.');
  return Object.freeze({
    brokers: [...options.brokers],
    groupId: options.groupId,
    topics: [...options.topics],
    db: untyped(options.db),
    schema,
    handler: (event: ConsumedEvent<T>, ctx: ProcessorContext) => handler(event, { ...ctx, trx: retyped<DB>(ctx.trx), query: pgQuery(ctx.trx) }),
    batchHandler: batchHandler && ((events: Array<ConsumedEvent<T>>, ctx: Omit<ProcessorContext, 'attempt'>) => batchHandler(events, { ...ctx, trx: retyped<DB>(ctx.trx), query: pgQuery(ctx.trx) })),
    mode,
    batchSize,
    decode: options.decode ?? ((value: Buffer) => JSON.parse(value.toString('utf8')) as T),
    tombstones,
    eventId,
    maxEventIdBytes,
    maxAttempts: positiveInt(options.maxAttempts ?? 5, 'maxAttempts', 1000),
    retryDelayMs: positiveInt(options.retryDelayMs ?? 200, 'retryDelayMs'),
    maxRetryDelayMs: positiveInt(options.maxRetryDelayMs ?? 30_000, 'maxRetryDelayMs'),
    onFailure,
    deadLetterTopic,
    onConflict,
    handlerTimeoutMs,
    lockTimeoutMs,
    statementTimeoutMs,
    fencing: options.fencing ?? true,
    takeoverTimeoutMs: positiveInt(options.takeoverTimeoutMs ?? 10_000, 'takeoverTimeoutMs'),
    fetchMaxWaitMs: positiveInt(options.fetchMaxWaitMs ?? 500, 'fetchMaxWaitMs', 60_000),
    sessionTimeoutMs,
    heartbeatIntervalMs,
    rebalanceTimeoutMs: positiveInt(options.rebalanceTimeoutMs ?? 60_000, 'rebalanceTimeoutMs'),
    maxBytesPerPartition: positiveInt(options.maxBytesPerPartition ?? 1_048_576, 'maxBytesPerPartition'),
    offsetCommitIntervalMs: nonNegativeInt(options.offsetCommitIntervalMs ?? 1000, 'offsetCommitIntervalMs'),
    partitionsConsumedConcurrently: positiveInt(options.partitionsConsumedConcurrently ?? DEFAULT_PARTITIONS_IN_FLIGHT, 'partitionsConsumedConcurrently', 1000),
    fromBeginning: options.fromBeginning ?? true,
    clientId: options.clientId ?? `effectively-${options.groupId}`,
    logger: loggerOption(options.logger, 'IdempotentConsumer options.logger'),
    metrics: options.metrics ?? new NoopMetrics(),
    traceContext: traceContextProvider(options.traceContext),
    hooks: options.hooks ?? {},
    handleSignals: options.handleSignals ?? false,
    preparedStatements: options.preparedStatements ?? true,
    rotateGenerations: booleanOption(options.rotateGenerations ?? true, 'rotateGenerations'),
    shutdownTimeoutMs: positiveInt(options.shutdownTimeoutMs ?? 30_000, 'shutdownTimeoutMs'),
    kafka: options.kafka,
    platformatic: options.platformatic,
    client: clientFactory(options),
  });
}

/** The factory behind `client`; the other client's settings are refused rather than ignored. */
function clientFactory(options: Pick<IdempotentConsumerOptions, 'client' | 'kafka' | 'platformatic'>): (settings: KafkaClientSettings) => ConsumerClient {
  const client: unknown = options.client ?? 'kafkajs';
  if (typeof client === 'function') return client as (settings: KafkaClientSettings) => ConsumerClient;
  if (client === 'kafkajs') {
    if (options.platformatic !== undefined) throw new InvalidConfigError('platformatic (settings of the @platformatic/kafka client) is set but client is "kafkajs": pass client: "platformatic", or move the settings to kafka.');
    return createKafkajsConsumer;
  }
  if (client === 'platformatic') {
    if (options.kafka !== undefined) throw new InvalidConfigError('kafka (settings of the kafkajs client) is set but client is "platformatic": pass connection settings (tls, sasl) as platformatic instead.');
    return createPlatformaticConsumer;
  }
  throw new InvalidConfigError(`client must be "kafkajs", "platformatic" or a function (settings) => ConsumerClient, got ${JSON.stringify(client)}.`);
}

function booleanOption(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw new InvalidConfigError(`${name} must be true or false, got ${JSON.stringify(value)}.`);
  return value;
}

function traceContextProvider(provider: TraceContextProvider | undefined): TraceContextProvider | undefined {
  if (provider !== undefined && typeof provider !== 'function') throw new InvalidConfigError('traceContext must be a function returning { traceparent, tracestate } or undefined.');
  return provider;
}
