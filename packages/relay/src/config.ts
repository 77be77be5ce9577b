import { assertIdentifier, InvalidConfigError, NoopMetrics, silentLogger, type Logger, type Metrics } from '@effectively/core';
import type { Kysely } from 'kysely';
import type { KafkaSettings, ProducerClient, ProducerClientSettings, ProducerSettings } from './kafka-adapter';
import type { LeaderLock } from './leader-lock';

/** The outbox relay's options. */
export interface OutboxRelayOptions {
  /** Kafka bootstrap addresses. */
  brokers: string[];
  /** Kysely over the Postgres that holds the `outbox` table; used to read and mark rows. */
  db: Kysely<unknown>;
  /**
   * Postgres URL for the relay's own leader-lock connection: one connection, kept open while the
   * relay runs, holding `pg_advisory_lock` so only one relay per schema publishes. Required
   * unless `leaderLock` is given.
   */
  databaseUrl?: string;
  /** Replaces the advisory-lock leader election (e.g. your own lock service). */
  leaderLock?: LeaderLock;
  /** Schema with effectively's tables; default `effectively`. */
  schema?: string;
  /** Most rows per poll cycle; default 500, at most 10,000. */
  batchSize?: number;
  /** Pause after a cycle that found nothing to publish; default 150 ms. */
  pollIntervalMs?: number;
  /** How often a standby relay tries to take the lock; default 2 s. */
  standbyRetryMs?: number;
  /** Attempts before a row is parked; default 10. */
  maxAttempts?: number;
  /** Delay before the first retry of a failed row; doubles per attempt up to `maxRetryDelayMs`. Default 1 s. */
  retryDelayMs?: number;
  /** Longest retry delay; default 5 min. */
  maxRetryDelayMs?: number;
  /** Bound for `stop()`; default 30 s. */
  shutdownTimeoutMs?: number;
  /** Kafka client id; default `effectively-relay-<schema>`. */
  clientId?: string;
  logger?: Logger;
  metrics?: Metrics;
  /** Extra kafkajs client settings (ssl, sasl, …). */
  kafka?: KafkaSettings;
  /**
   * Extra kafkajs producer settings (retry, timeouts, compression is per send and not offered).
   * `idempotent` is always true and `maxInFlightRequests` always 1; other values are refused.
   */
  producer?: ProducerSettings;
  /** Replaces the kafkajs producer (a KafkaJS-compatible client, or a wrapper). */
  producerClient?: (settings: ProducerClientSettings) => ProducerClient;
}

/** Options after validation and defaults; frozen. */
export type ResolvedRelayOptions = Readonly<{
  brokers: readonly string[];
  db: Kysely<unknown>;
  databaseUrl: string | undefined;
  leaderLock: LeaderLock | undefined;
  schema: string;
  batchSize: number;
  pollIntervalMs: number;
  standbyRetryMs: number;
  maxAttempts: number;
  retryDelayMs: number;
  maxRetryDelayMs: number;
  shutdownTimeoutMs: number;
  clientId: string;
  logger: Logger;
  metrics: Metrics;
  kafka: KafkaSettings | undefined;
  producer: Readonly<ProducerSettings>;
  producerClient: ((settings: ProducerClientSettings) => ProducerClient) | undefined;
}>;

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
  return Object.freeze({ retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 5_000 }, ...p, idempotent: true, maxInFlightRequests: 1 });
}

/**
 * Validates options once, up front, with messages that say what to fix, and returns a frozen
 * copy with defaults. The caller's object is not changed.
 */
export function resolveRelayOptions(options: OutboxRelayOptions): ResolvedRelayOptions {
  if (typeof options !== 'object' || options === null) throw new InvalidConfigError('OutboxRelay needs an options object: { brokers, db, databaseUrl }.');
  if (!Array.isArray(options.brokers) || options.brokers.length === 0 || !options.brokers.every((b) => typeof b === 'string' && b !== '')) {
    throw new InvalidConfigError('brokers must list at least one host:port.');
  }
  if (options.db === undefined || options.db === null) throw new InvalidConfigError('db (a Kysely instance over the Postgres holding the outbox) is required.');
  if (options.leaderLock === undefined && (typeof options.databaseUrl !== 'string' || options.databaseUrl === '')) {
    throw new InvalidConfigError('databaseUrl is required (the relay keeps one connection of its own for the leader lock), unless you pass leaderLock.');
  }
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const retryDelayMs = positiveInt(options.retryDelayMs ?? 1_000, 'retryDelayMs');
  const maxRetryDelayMs = positiveInt(options.maxRetryDelayMs ?? 300_000, 'maxRetryDelayMs');
  if (maxRetryDelayMs < retryDelayMs) throw new InvalidConfigError(`maxRetryDelayMs (${maxRetryDelayMs}) must not be below retryDelayMs (${retryDelayMs}).`);
  return Object.freeze({
    brokers: Object.freeze([...options.brokers]),
    db: options.db,
    databaseUrl: options.databaseUrl,
    leaderLock: options.leaderLock,
    schema,
    batchSize: positiveInt(options.batchSize ?? 500, 'batchSize', 10_000),
    pollIntervalMs: positiveInt(options.pollIntervalMs ?? 150, 'pollIntervalMs', 60_000),
    standbyRetryMs: positiveInt(options.standbyRetryMs ?? 2_000, 'standbyRetryMs', 600_000),
    maxAttempts: positiveInt(options.maxAttempts ?? 10, 'maxAttempts', 1_000),
    retryDelayMs,
    maxRetryDelayMs,
    shutdownTimeoutMs: positiveInt(options.shutdownTimeoutMs ?? 30_000, 'shutdownTimeoutMs'),
    clientId: options.clientId ?? `effectively-relay-${schema}`,
    logger: options.logger ?? silentLogger(),
    metrics: options.metrics ?? new NoopMetrics(),
    kafka: options.kafka,
    producer: resolveProducer(options.producer),
    producerClient: options.producerClient,
  });
}
