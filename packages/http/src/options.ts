import type { Kysely } from 'kysely';
import { assertIdentifier, InvalidConfigError, NoopMetrics, loggerOption, type Logger, type Metrics } from '@effectively/core';

/** Headers stored with a response and replayed, unless the `storedHeaders` option says otherwise. */
export const DEFAULT_STORED_HEADERS: readonly string[] = Object.freeze([
  'content-type',
  'content-language',
  'content-location',
  'location',
  'cache-control',
  'etag',
  'last-modified',
  'link',
  'vary',
]);

/** Options for {@link createIdempotency}. Everything but `db` has a default. */
export interface IdempotencyOptions<DB = unknown> {
  /** Kysely instance over the Postgres that holds the `idempotency_keys` table (see `migrate()`). */
  db: Kysely<DB>;
  /** Schema holding `idempotency_keys`; default `effectively`. Must be a plain identifier. */
  schema?: string;
  /** How long a key is remembered after its first use; default 24 h. Expired keys can be reused and are deleted by `prune()`. */
  ttlMs?: number;
  /** How long a claim stays exclusive without news from its holder; after it, a retry takes the key over. Default 30 s. */
  leaseMs?: number;
  /** Outside transactional mode, how often a running handler renews its lease; default a third of `leaseMs`; 0 disables renewal. */
  heartbeatMs?: number;
  /** Run handlers inside the transaction that stores the response (default `true`); can be overridden per route. */
  transactional?: boolean;
  /** Answer 400 when the `Idempotency-Key` header is absent (default `true`); when `false` such requests run without protection. */
  requireKey?: boolean;
  /** Store and replay 4xx responses (default `true`); when `false` the key is released so the client can retry. */
  storeClientErrors?: boolean;
  /** Store and replay 5xx responses (default `false`: the key is released and the business writes rolled back). */
  storeServerErrors?: boolean;
  /** Longest accepted key in characters; default 255. */
  maxKeyLength?: number;
  /** Characters a key may consist of; default visible ASCII without spaces, `/^[\x21-\x7E]+$/`. */
  keyPattern?: RegExp;
  /** Response headers stored and replayed (case-insensitive); default {@link DEFAULT_STORED_HEADERS}. */
  storedHeaders?: readonly string[];
  /** Header added to replayed responses, with value `true`; default `idempotent-replayed`. */
  replayHeader?: string;
  /**
   * `Retry-After` seconds sent with 409 while the first request is known to be running (a
   * transactional request, until its transaction ends); default 1. When its holder is not known
   * to be alive (crashed, or outside transactional mode), `Retry-After` is the seconds left on
   * its lease, rounded up.
   */
  retryAfterSeconds?: number;
  /** Prefix of the problem `type` URIs in 400/409/422 bodies (RFC 9457); the problem name is appended. */
  problemTypeBase?: string;
  /** Where decisions are logged (with key and scope); default silent. */
  logger?: Logger;
  /** Where counters are reported; default discarded. See `IDEMPOTENCY_METRICS` for Prometheus definitions. */
  metrics?: Metrics;
}

/** {@link IdempotencyOptions} after validation, with every default filled in. Frozen. */
export interface ResolvedIdempotencyOptions<DB = unknown> {
  readonly db: Kysely<DB>;
  readonly schema: string;
  readonly ttlMs: number;
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  readonly transactional: boolean;
  readonly requireKey: boolean;
  readonly storeClientErrors: boolean;
  readonly storeServerErrors: boolean;
  readonly maxKeyLength: number;
  readonly keyPattern: RegExp;
  readonly storedHeaders: ReadonlySet<string>;
  readonly replayHeader: string;
  readonly retryAfterSeconds: number;
  readonly problemTypeBase: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const DAY_MS = 24 * 60 * 60 * 1000;

function integer(value: unknown, name: string, min: number, max: number, fallback: number, hint: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidConfigError(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}; ${hint}.`);
  }
  return value;
}

function flag(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidConfigError(`${name} must be true or false, got ${JSON.stringify(value)}.`);
  return value;
}

function headerName(value: unknown, name: string): string {
  if (typeof value !== 'string' || !TOKEN.test(value)) {
    throw new InvalidConfigError(`${name} must be an HTTP header name (letters, digits and !#$%&'*+.^_\`|~-), got ${JSON.stringify(value)}.`);
  }
  return value.toLowerCase();
}

/**
 * Validates `options` once and returns a frozen copy with defaults filled in; the caller's
 * object is not modified.
 *
 * @throws InvalidConfigError naming the option and what to change.
 */
export function resolveIdempotencyOptions<DB>(options: IdempotencyOptions<DB>): ResolvedIdempotencyOptions<DB> {
  if (options === null || typeof options !== 'object') throw new InvalidConfigError('createIdempotency needs an options object with at least { db }.');
  const db = options.db as unknown;
  if (db === null || typeof db !== 'object' || typeof (db as { transaction?: unknown }).transaction !== 'function') {
    throw new InvalidConfigError('db must be a Kysely instance (for example createDatabase({ connectionString }).db).');
  }
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const leaseMs = integer(options.leaseMs, 'leaseMs', 100, DAY_MS, 30_000, 'it is how long a crashed request blocks its key (100 ms to 24 h)');
  const ttlMs = integer(options.ttlMs, 'ttlMs', 1_000, 365 * DAY_MS, DAY_MS, 'it is how long keys are remembered (1 s to 365 days)');
  if (ttlMs <= leaseMs) {
    throw new InvalidConfigError(`ttlMs (${ttlMs}) must be longer than leaseMs (${leaseMs}): a key must outlive the lease of the request that claimed it.`);
  }
  const heartbeatMs = integer(options.heartbeatMs, 'heartbeatMs', 0, leaseMs - 1, Math.floor(leaseMs / 3), `renew the lease well before it ends: use 0 (off) up to leaseMs - 1 (${leaseMs - 1})`);
  const maxKeyLength = integer(options.maxKeyLength, 'maxKeyLength', 1, 10_000, 255, 'keys are stored in a unique index, keep them short');
  const retryAfterSeconds = integer(options.retryAfterSeconds, 'retryAfterSeconds', 0, 86_400, 1, 'it tells clients when to retry a request that is still running');
  const keyPattern = options.keyPattern ?? /^[\x21-\x7E]+$/;
  if (!(keyPattern instanceof RegExp) || keyPattern.global || keyPattern.sticky) {
    throw new InvalidConfigError('keyPattern must be a RegExp without the g or y flag (they make test() stateful), e.g. /^[A-Za-z0-9-]+$/.');
  }
  const storedHeaders = options.storedHeaders ?? DEFAULT_STORED_HEADERS;
  if (!Array.isArray(storedHeaders)) throw new InvalidConfigError('storedHeaders must be an array of header names, e.g. ["content-type", "location"].');
  const problemTypeBase = options.problemTypeBase ?? 'tag:effectively,2025:problem:';
  if (typeof problemTypeBase !== 'string' || problemTypeBase === '') {
    throw new InvalidConfigError('problemTypeBase must be a non-empty URI prefix, e.g. "https://api.example.com/problems/".');
  }
  const metrics = options.metrics ?? new NoopMetrics();
  if (typeof metrics.increment !== 'function') throw new InvalidConfigError('metrics must implement the Metrics interface from @effectively/core (increment, observe, set).');
  return Object.freeze({
    db: options.db,
    schema,
    ttlMs,
    leaseMs,
    heartbeatMs,
    transactional: flag(options.transactional, 'transactional', true),
    requireKey: flag(options.requireKey, 'requireKey', true),
    storeClientErrors: flag(options.storeClientErrors, 'storeClientErrors', true),
    storeServerErrors: flag(options.storeServerErrors, 'storeServerErrors', false),
    maxKeyLength,
    keyPattern,
    storedHeaders: new Set(storedHeaders.map((h, i) => headerName(h, `storedHeaders[${i}]`))),
    replayHeader: headerName(options.replayHeader ?? 'idempotent-replayed', 'replayHeader'),
    retryAfterSeconds,
    problemTypeBase,
    logger: loggerOption(options.logger, 'createIdempotency options.logger'),
    metrics,
  });
}
