import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { assertIdentifier, assertOptionalPeer, InvalidConfigError, PLATFORMATIC_KAFKA, NoopMetrics, loggerOption, untyped, type Logger, type Metrics, type PlatformaticClientOptions } from '@effectively/core';
import type { Kysely } from 'kysely';
import { createKafkajsProducer, type KafkaSettings, type ProducerClient, type ProducerClientSettings, type ProducerSettings } from './kafka-adapter';
import { createPlatformaticProducer } from './platformatic-producer';

/**
 * Which Kafka client the relay publishes with: `'kafkajs'` (default), `'platformatic'`
 * (@platformatic/kafka, an optional peer dependency needing Node.js ≥ 22.22, loaded on first
 * connection), or a function creating any {@link ProducerClient} (a wrapper, another client).
 */
export type RelayClientChoice = 'kafkajs' | 'platformatic' | ((settings: ProducerClientSettings) => ProducerClient);

/** Points in the relay's cycle where your code can run (metrics, tracing, fault injection). */
export interface RelayHooks {
  /**
   * After Kafka acknowledged `eventIds` and before their rows are deleted. A crash here means
   * those rows are published again by whichever relay next holds their lanes.
   */
  afterKafkaAck?(info: { eventIds: readonly string[]; lanes: readonly number[] }): void | Promise<void>;
}

/** The outbox relay's options; `DB` is the Kysely database type of `db` (any: the relay touches only its own tables). */
export interface OutboxRelayOptions<DB = unknown> {
  /** Kafka bootstrap addresses. */
  brokers: string[];
  /**
   * Kysely over the Postgres that holds the `outbox` table. Make it with `createDatabase` from
   * `@effectively/core`, or give your pool's clients an `error` listener yourself: Postgres ends a
   * claim left open longer than `claimTimeoutMs`, and node-postgres reports that as an `error`
   * event on the checked-out client, which crashes a process that does not listen for it.
   */
  db: Kysely<DB>;
  /**
   * Postgres URL for the relay's `LISTEN` connection (a connection of its own, not from the
   * pool; it must not go through a transaction-mode pooler). Required unless `listen` is false.
   */
  databaseUrl?: string;
  /** Wake on `NOTIFY` from writers; default true. When false the relay only polls. */
  listen?: boolean;
  /** Schema with effectively's tables; default `effectively`. */
  schema?: string;
  /** Most rows per claim; default 500, at most 10,000. */
  batchSize?: number;
  /**
   * Most bytes (keys, values, headers) per claim; default 900,000, under the broker's default
   * 1 MB batch limit, so big rows do not make every claim fail and fall back to one-by-one.
   */
  maxBatchBytes?: number;
  /**
   * Claims in flight at once, each over its own share of this relay's lanes (a key's lane is in
   * one of them, so per-key order holds) with its own producer and database connection: one
   * claim's database work overlaps another's send. Default 2, at most 16.
   */
  parallelClaims?: number;
  /** Poll interval when idle (the fallback when a notification is missed or the listener is down); default 500 ms. */
  pollIntervalMs?: number;
  /**
   * How long a lane lease lasts without renewal; default 10 s. A relay that dies holds its
   * lanes this long; a relay renews every third of it.
   */
  leaseMs?: number;
  /**
   * Longest a claim transaction may stay open (it spans the Kafka send); default 60 s. Postgres
   * ends a claim idle for longer (`idle_in_transaction_session_timeout`), so a frozen relay
   * cannot keep its lanes locked; its rows are then published again by another relay.
   */
  claimTimeoutMs?: number;
  /**
   * Longest one Kafka send (or connection) may take before the relay gives it up as
   * `unavailable` and retries on its own; default min(5 s, leaseMs / 2), below `leaseMs` and
   * `claimTimeoutMs`. The relay owns retrying: kafkajs retries once, briefly, inside this bound.
   */
  sendTimeoutMs?: number;
  /** Attempts before a row Kafka keeps refusing is parked; default 5. */
  maxAttempts?: number;
  /** Delay before the first retry of a failed row; doubles per attempt up to `maxRetryDelayMs`. Default 1 s. */
  retryDelayMs?: number;
  /** Longest retry delay; default 5 min. */
  maxRetryDelayMs?: number;
  /** Bound for `stop()`; default 30 s. */
  shutdownTimeoutMs?: number;
  /** Kafka client id; default `effectively-relay-<schema>`. */
  clientId?: string;
  /** This relay's name in `outbox_lanes.owner`; default `<host>:<pid>:<random>`. */
  relayId?: string;
  logger?: Logger;
  metrics?: Metrics;
  hooks?: RelayHooks;
  /**
   * The Kafka client: `'kafkajs'` (default), `'platformatic'` (@platformatic/kafka: `npm install
   * @platformatic/kafka`, Node.js ≥ 22.22), or a function `(settings) => ProducerClient`. Either
   * client is idempotent with `acks: -1` and one request in flight, and puts a key on the same
   * partition (the Java client's partitioner).
   */
  client?: RelayClientChoice;
  /**
   * Extra kafkajs client settings (ssl, sasl, …), for `client: 'kafkajs'`. Defaults keep a send
   * short: `connectionTimeout` 1 s, `requestTimeout` = `sendTimeoutMs`, `retry` { retries: 1,
   * initialRetryTime: 100, maxRetryTime: 1000 }.
   */
  kafka?: KafkaSettings;
  /**
   * Extra kafkajs producer settings (retry, timeouts), for `client: 'kafkajs'`. `idempotent` is
   * always true and `maxInFlightRequests` always 1; other values are refused. Default `retry`
   * { retries: 1, initialRetryTime: 100, maxRetryTime: 1000 }: the relay, not kafkajs, retries.
   */
  producer?: ProducerSettings;
  /**
   * Extra @platformatic/kafka settings (tls, sasl, time-outs), for `client: 'platformatic'`.
   * Defaults keep a send short: `connectTimeout` 1 s, `requestTimeout` = `sendTimeoutMs`,
   * `retries` 2 (at least 2: the client turns 0 or 1 into unlimited retries for an idempotent
   * producer), `retryDelay` 100 ms; the relay, not the client, retries after that.
   */
  platformatic?: PlatformaticClientOptions;
  /** @deprecated The same as `client` given a function; use `client`. */
  producerClient?: (settings: ProducerClientSettings) => ProducerClient;
}

/** Options after validation and defaults; frozen. */
export type ResolvedRelayOptions = Readonly<{
  brokers: readonly string[];
  db: Kysely<unknown>;
  databaseUrl: string | undefined;
  listen: boolean;
  schema: string;
  batchSize: number;
  maxBatchBytes: number;
  parallelClaims: number;
  pollIntervalMs: number;
  leaseMs: number;
  claimTimeoutMs: number;
  sendTimeoutMs: number;
  maxAttempts: number;
  retryDelayMs: number;
  maxRetryDelayMs: number;
  shutdownTimeoutMs: number;
  clientId: string;
  relayId: string;
  logger: Logger;
  metrics: Metrics;
  hooks: Readonly<RelayHooks>;
  kafka: KafkaSettings;
  producer: Readonly<ProducerSettings>;
  platformatic: Readonly<PlatformaticClientOptions>;
  /** The chosen client's name, for logs: `kafkajs`, `platformatic` or `custom`. */
  clientName: 'kafkajs' | 'platformatic' | 'custom';
  /** Creates the chosen client. */
  producerClient: (settings: ProducerClientSettings) => ProducerClient;
}>;

/** kafkajs retries once, briefly: the relay's own backoff does the rest, outside the claim. */
const SHORT_RETRY = Object.freeze({ retries: 1, initialRetryTime: 100, maxRetryTime: 1_000 });

function positiveInt(value: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw new InvalidConfigError(`${name} must be an integer between 1 and ${max}, got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** Checks the producer settings a caller passed (F22: kafkajs allows idempotence with several requests in flight, which can reorder). */
function resolveProducer(producer: ProducerSettings | undefined): Readonly<ProducerSettings> {
  const p = { ...(producer ?? {}) } as ProducerSettings & Record<string, unknown>;
  for (const key of ['transactionalId', 'createPartitioner', 'transactionTimeout']) {
    if (key in p) throw new InvalidConfigError(`producer.${key} cannot be set: the relay uses an idempotent, non-transactional producer with the default (Java-compatible) partitioner so keys land where other clients put them.`);
  }
  if (p.idempotent === false) {
    throw new InvalidConfigError('producer.idempotent cannot be false: the relay relies on the idempotent producer so broker-side retries neither duplicate nor reorder records. Remove the setting.');
  }
  if (p.maxInFlightRequests !== undefined && p.maxInFlightRequests !== 1) {
    throw new InvalidConfigError(
      `producer.maxInFlightRequests must be 1 (got ${JSON.stringify(p.maxInFlightRequests)}): kafkajs does not keep order with an idempotent producer and several requests in flight (kafkajs#598, #980), so per-key order would break. Remove the setting.`,
    );
  }
  if (p.retry?.retries !== undefined && p.retry.retries < 1) {
    throw new InvalidConfigError('producer.retry.retries must be at least 1: an idempotent producer must be allowed to retry transient errors.');
  }
  return Object.freeze({ retry: { ...SHORT_RETRY }, ...p, idempotent: true, maxInFlightRequests: 1 });
}

/** The client factory `client` (or the older `producerClient`) names, and the settings that go with it. */
function resolveClient<DB>(options: OutboxRelayOptions<DB>): { clientName: ResolvedRelayOptions['clientName']; producerClient: ResolvedRelayOptions['producerClient'] } {
  if (options.client !== undefined && options.producerClient !== undefined) {
    throw new InvalidConfigError('client and producerClient are both set: producerClient is the older name of client given a function; pass only client.');
  }
  const client = options.client ?? options.producerClient ?? 'kafkajs';
  if (typeof client === 'function') return { clientName: 'custom', producerClient: client };
  if (client === 'kafkajs') {
    if (options.platformatic !== undefined) throw new InvalidConfigError('platformatic (settings of the @platformatic/kafka client) is set but client is "kafkajs": pass client: "platformatic", or move the settings to kafka.');
    return { clientName: 'kafkajs', producerClient: createKafkajsProducer };
  }
  if (client === 'platformatic') {
    for (const key of ['kafka', 'producer'] as const) {
      if (options[key] !== undefined) throw new InvalidConfigError(`${key} (settings of the kafkajs client) is set but client is "platformatic": pass connection settings (tls, sasl, time-outs) as platformatic instead.`);
    }
    // Node.js and the package checked now (not loaded): the relay would otherwise take it for Kafka being down.
    assertOptionalPeer({ ...PLATFORMATIC_KAFKA, from: __filename });
    return { clientName: 'platformatic', producerClient: createPlatformaticProducer };
  }
  throw new InvalidConfigError(`client must be "kafkajs", "platformatic" or a function (settings) => ProducerClient, got ${JSON.stringify(client)}.`);
}

/** The @platformatic/kafka settings with the relay's defaults (a send stays short; the relay retries). */
function resolvePlatformatic(platformatic: PlatformaticClientOptions | undefined, sendTimeoutMs: number): Readonly<PlatformaticClientOptions> {
  if (platformatic !== undefined && (typeof platformatic !== 'object' || platformatic === null)) throw new InvalidConfigError('platformatic must be an object of @platformatic/kafka settings (tls, sasl, connectTimeout, requestTimeout, retries, retryDelay).');
  const p = { connectTimeout: 1_000, requestTimeout: sendTimeoutMs, retries: 2, retryDelay: 100, ...platformatic };
  if (!Number.isInteger(p.retries) || p.retries < 2) {
    throw new InvalidConfigError(`platformatic.retries must be an integer of at least 2, got ${JSON.stringify(p.retries)}: @platformatic/kafka turns 0 or 1 into unlimited retries for an idempotent producer, and a send must end within sendTimeoutMs.`);
  }
  return Object.freeze(p);
}

/**
 * Validates options once, up front, with messages that say what to fix, and returns a frozen
 * copy with defaults. The caller's object is not changed.
 */
export function resolveRelayOptions<DB>(options: OutboxRelayOptions<DB>): ResolvedRelayOptions {
  if (typeof options !== 'object' || options === null) throw new InvalidConfigError('OutboxRelay needs an options object: { brokers, db, databaseUrl }.');
  if (!Array.isArray(options.brokers) || options.brokers.length === 0 || !options.brokers.every((b) => typeof b === 'string' && b !== '')) {
    throw new InvalidConfigError('brokers must list at least one host:port.');
  }
  if (options.db === undefined || options.db === null) throw new InvalidConfigError('db (a Kysely instance over the Postgres holding the outbox) is required.');
  const listen = options.listen ?? true;
  if (typeof listen !== 'boolean') throw new InvalidConfigError(`listen must be true or false, got ${JSON.stringify(listen)}.`);
  if (listen && (typeof options.databaseUrl !== 'string' || options.databaseUrl === '')) {
    throw new InvalidConfigError('databaseUrl is required for the LISTEN connection (a connection of its own, outside the pool); pass it, or listen: false to poll only.');
  }
  const relayId = options.relayId ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  if (typeof relayId !== 'string' || relayId === '' || relayId.length > 200) throw new InvalidConfigError(`relayId must be a non-empty string of at most 200 characters, got ${JSON.stringify(relayId)}.`);
  const leaseMs = positiveInt(options.leaseMs ?? 10_000, 'leaseMs', 600_000);
  if (leaseMs < 300) throw new InvalidConfigError(`leaseMs must be at least 300 (a relay renews every third of it), got ${leaseMs}.`);
  const claimTimeoutMs = positiveInt(options.claimTimeoutMs ?? 60_000, 'claimTimeoutMs', 3_600_000);
  if (claimTimeoutMs < 1_000) throw new InvalidConfigError(`claimTimeoutMs must be at least 1000 (it bounds a Kafka send), got ${claimTimeoutMs}.`);
  const sendTimeoutMs = positiveInt(options.sendTimeoutMs ?? Math.min(5_000, Math.floor(leaseMs / 2)), 'sendTimeoutMs', 600_000);
  if (sendTimeoutMs < 100 || sendTimeoutMs >= leaseMs || sendTimeoutMs >= claimTimeoutMs) {
    throw new InvalidConfigError(`sendTimeoutMs must be at least 100 and below leaseMs (${leaseMs}) and claimTimeoutMs (${claimTimeoutMs}): a send must end well before the lanes' lease runs out; got ${sendTimeoutMs}.`);
  }
  const hooks = options.hooks ?? {};
  if (typeof hooks !== 'object' || hooks === null || (hooks.afterKafkaAck !== undefined && typeof hooks.afterKafkaAck !== 'function')) {
    throw new InvalidConfigError('hooks must be an object whose members are functions.');
  }
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const retryDelayMs = positiveInt(options.retryDelayMs ?? 1_000, 'retryDelayMs');
  const maxRetryDelayMs = positiveInt(options.maxRetryDelayMs ?? 300_000, 'maxRetryDelayMs');
  if (maxRetryDelayMs < retryDelayMs) throw new InvalidConfigError(`maxRetryDelayMs (${maxRetryDelayMs}) must not be below retryDelayMs (${retryDelayMs}).`);
  return Object.freeze({
    brokers: Object.freeze([...options.brokers]),
    db: untyped(options.db),
    databaseUrl: options.databaseUrl,
    listen,
    schema,
    batchSize: positiveInt(options.batchSize ?? 500, 'batchSize', 10_000),
    maxBatchBytes: positiveInt(options.maxBatchBytes ?? 900_000, 'maxBatchBytes', 100_000_000),
    parallelClaims: positiveInt(options.parallelClaims ?? 2, 'parallelClaims', 16),
    pollIntervalMs: positiveInt(options.pollIntervalMs ?? 500, 'pollIntervalMs', 60_000),
    leaseMs,
    claimTimeoutMs,
    sendTimeoutMs,
    maxAttempts: positiveInt(options.maxAttempts ?? 5, 'maxAttempts', 1_000),
    retryDelayMs,
    maxRetryDelayMs,
    shutdownTimeoutMs: positiveInt(options.shutdownTimeoutMs ?? 30_000, 'shutdownTimeoutMs'),
    clientId: options.clientId ?? `effectively-relay-${schema}`,
    relayId,
    hooks: Object.freeze({ ...hooks }),
    logger: loggerOption(options.logger, 'OutboxRelay options.logger'),
    metrics: options.metrics ?? new NoopMetrics(),
    kafka: Object.freeze({ connectionTimeout: 1_000, requestTimeout: sendTimeoutMs, retry: { ...SHORT_RETRY }, ...options.kafka }),
    producer: resolveProducer(options.producer),
    platformatic: resolvePlatformatic(options.platformatic, sendTimeoutMs),
    ...resolveClient(options),
  });
}
