import { randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import { childLogger, guardTransaction, InvalidConfigError, isInFailedTransaction, retyped, runInTransaction, TransactionAbortedError, untyped, type Logger } from '@effectively/core';
import { fingerprintRequest } from './fingerprint';
import { parseIdempotencyKey } from './idempotency-key';
import { KeyStore, type ClaimRef, type KeyRecord } from './key-store';
import { IdempotencyMetric, ZeroedCounters } from './metrics';
import { annotateKeyOutcome, KeysInFlight } from './observe';
import { resolveIdempotencyOptions, type IdempotencyOptions, type ResolvedIdempotencyOptions } from './options';
import { problemResponse } from './problem';
import { firstResponse, normalizeResponse, replayResponse, type NormalizedResponse } from './response';
import type { HandlerResponse, HttpResponse, IdempotentRequest, StoredResponse } from './types';

/** What {@link Idempotency.claim} needs to know about a request. */
export interface ClaimInput {
  scope: string;
  key: string;
  method: string;
  /** The request target the key is bound to (stored for diagnosis; the fingerprint is what is compared). */
  route: string;
  /** From {@link fingerprintRequest}. */
  fingerprint: string;
}

/** A claim this request holds on a key: pass it to `complete` or `release`. */
export interface Claim extends ClaimRef {
  /** 1 for the first run of the key, 2+ after takeovers of a crashed run. */
  readonly attempt: number;
}

/**
 * The outcome of claiming a key. Expected outcomes are values, not exceptions:
 * - `claimed`: this request owns the key and must run the operation (`takeover` when a previous
 *   holder's lease had run out);
 * - `replay`: the operation already completed; send `response` again;
 * - `conflict`: another request with this key is still running (409);
 * - `mismatch`: the key was used for a different request (422).
 */
export type ClaimOutcome =
  | { kind: 'claimed'; claim: Claim; takeover: boolean }
  | { kind: 'replay'; response: StoredResponse }
  | { kind: 'conflict'; retryAfterSeconds: number }
  | { kind: 'mismatch' };

/** What the handler of an idempotent operation receives. */
export interface HandlerContext<DB> {
  /**
   * Where to make the operation's writes. In transactional mode this is the transaction in
   * which the response is stored, so writes, outbox events and the key commit together.
   */
  db: Kysely<DB>;
  /** Whether `db` is that transaction. */
  transactional: boolean;
  /** The idempotency key, or `undefined` on an unprotected request (`requireKey: false`). */
  key: string | undefined;
  scope: string;
  /** 1 on the key's first run, 2+ when a crashed run's key was taken over. */
  attempt: number;
}

/** The operation made idempotent. */
export type IdempotentHandler<DB> = (context: HandlerContext<DB>) => Promise<HandlerResponse>;

/** Per-route overrides for {@link Idempotency.handle}. */
export interface HandleOptions {
  transactional?: boolean;
  requireKey?: boolean;
}

/**
 * What {@link Idempotency.handle} did, with the response to send:
 * `executed` (the handler ran; `stored` says whether its response was kept), `replayed`,
 * `conflict` (409), `mismatch` (422), `rejected` (400, bad or missing key), `unprotected`
 * (no key and none required; the handler ran without protection).
 */
export type HandleResult =
  | { outcome: 'executed'; response: HttpResponse; stored: boolean; takeover: boolean }
  | { outcome: 'replayed' | 'conflict' | 'mismatch' | 'rejected' | 'unprotected'; response: HttpResponse };

/** Options for {@link Idempotency.prune}. */
export interface PruneOptions {
  /** Rows deleted per statement; default 500. Small batches keep locks and WAL bursts short. */
  batchSize?: number;
  /** Stop after this many batches (default: until nothing expired is left). */
  maxBatches?: number;
}

/** Idempotency keys on Postgres, framework-neutral; see {@link createIdempotency}. */
export interface Idempotency<DB = unknown> {
  /** The validated, frozen configuration. */
  readonly options: ResolvedIdempotencyOptions<DB>;
  /**
   * Runs `handler` at most once per (scope, key) and returns the response to send: the fresh
   * one, a replay, or a problem response (400, 409, 422). A handler that throws, or answers
   * with a status that is not stored, releases the key (and in transactional mode rolls its
   * writes back); a thrown error is re-thrown for the framework to turn into a 500.
   */
  handle(request: IdempotentRequest, handler: IdempotentHandler<DB>, options?: HandleOptions): Promise<HandleResult>;
  /** Low level: claims `input.key` atomically (metrics and logs are reported by `handle` only). */
  claim(input: ClaimInput): Promise<ClaimOutcome>;
  /** Low level: stores `response` for a claim; `false` when the claim had been taken over. */
  complete(claim: Claim, response: StoredResponse, trx?: Kysely<DB>): Promise<boolean>;
  /** Low level: gives up a claim without a response, so a retry can run at once. */
  release(claim: Claim): Promise<boolean>;
  /** Deletes expired keys in batches of `batchSize`; returns how many were deleted. */
  prune(options?: PruneOptions): Promise<number>;
}

/** Thrown inside the handler's transaction to roll it back while keeping the response. */
class Rollback {
  constructor(readonly response: NormalizedResponse) {}
}

/** Thrown inside the handler's transaction when the claim was taken over before it began. */
class ClaimLost {}

/**
 * Creates the idempotency-key store over the `idempotency_keys` table (migration
 * `0003-idempotency-keys`). Options are validated here, once.
 *
 * @throws InvalidConfigError when an option is out of range, with what to change.
 */
export function createIdempotency<DB = unknown>(options: IdempotencyOptions<DB>): Idempotency<DB> {
  const o = resolveIdempotencyOptions(options);
  const db = untyped(o.db);
  const store = new KeyStore(db, o.schema, o.leaseMs, o.ttlMs);
  const { metrics } = o;
  const inFlight = new KeysInFlight(metrics);
  const zeroed = new ZeroedCounters(metrics);

  const shouldStore = (status: number): boolean => (status >= 500 ? o.storeServerErrors : status >= 400 ? o.storeClientErrors : true);

  /**
   * `Retry-After` for a key whose lease is live: `retryAfterSeconds` while the first request is
   * known to be alive (a transactional request holds its session lock until its transaction
   * ends: it may answer any moment); otherwise its holder may have crashed and nothing can run
   * before the lease ends, so the seconds left on the lease, rounded up.
   */
  async function retryAfter(record: KeyRecord, on: Kysely<unknown> | undefined): Promise<number> {
    if (await store.holderAlive(record.scope, record.key, on)) return o.retryAfterSeconds;
    // The holder may have finished (and let go of its lock) since the record was read.
    const now = await store.read(record.scope, record.key, on);
    if (now === undefined || now.leaseToken !== record.leaseToken || now.status !== 'in_progress' || !now.leaseLive) return o.retryAfterSeconds;
    return Math.max(1, now.leaseSecondsLeft);
  }

  /**
   * Claims the key. On a `pinned` connection (transactional requests) the claim also takes the
   * holder's session lock in the same statement (`locked`), so its holder is known alive from
   * the moment the claim is visible until {@link KeyStore.unlock}.
   */
  async function claimOn(input: ClaimInput, pinned?: Kysely<unknown>): Promise<{ outcome: ClaimOutcome; locked: boolean }> {
    const { scope, key, method, route, fingerprint } = input;
    const m = method.toUpperCase();
    for (let round = 0; round < 3; round++) {
      const ref: ClaimRef = { scope, key, leaseToken: randomUUID() };
      const inserted = await store.insert(ref, m, route, fingerprint, pinned);
      if (inserted !== undefined) {
        return { outcome: { kind: 'claimed', claim: { ...ref, attempt: 1 }, takeover: false }, locked: inserted.locked };
      }
      const record = await store.read(scope, key, pinned);
      if (record === undefined) continue; // released between our insert and read: try again
      if (!record.expired) {
        if (record.fingerprint !== fingerprint) return { outcome: { kind: 'mismatch' }, locked: false };
        if (record.status === 'completed' && record.response !== undefined) return { outcome: { kind: 'replay', response: record.response }, locked: false };
        if (record.leaseLive) return { outcome: { kind: 'conflict', retryAfterSeconds: await retryAfter(record, pinned) }, locked: false };
      }
      const taken = await store.takeOver(record.leaseToken, ref, m, route, fingerprint, pinned);
      if (taken !== undefined) {
        return { outcome: { kind: 'claimed', claim: { ...ref, attempt: taken.attempts }, takeover: !record.expired }, locked: taken.locked };
      }
      // Someone else took it, or its holder is alive in a transaction: look again.
    }
    return { outcome: { kind: 'conflict', retryAfterSeconds: o.retryAfterSeconds }, locked: false };
  }

  const claim = async (input: ClaimInput): Promise<ClaimOutcome> => (await claimOn(input)).outcome;

  const complete = (c: Claim, response: StoredResponse, trx?: Kysely<DB>): Promise<boolean> =>
    store.complete(untyped(trx ?? o.db), c, response);
  const release = (c: Claim): Promise<boolean> => store.release(c);
  type Pinned = Kysely<DB> | undefined;

  /** The transaction as a handler sees it: a statement that would end it (COMMIT, ROLLBACK, …) is refused with TransactionControlRefusedError. */
  const handlerTransaction = (t: Transaction<unknown>): Transaction<DB> => guardTransaction(retyped<DB>(t));

  /** Runs the handler in its transaction, storing the response there; returns what to send. */
  async function runTransactional(c: Claim, log: Logger, handler: IdempotentHandler<DB>, scope: string, pinned: Pinned): Promise<{ normalized: NormalizedResponse; stored: boolean }> {
    // COMMIT is checked: a handler that caught a database error and returned (the transaction aborted) gets TransactionAbortedError, not a stored response.
    const normalized = await runInTransaction(untyped(pinned ?? o.db), false, async (t) => {
      const trx = handlerTransaction(t);
      if (!(await store.lockOwn(t, c))) throw new ClaimLost();
      const result = normalizeResponse(await handler({ db: trx, transactional: true, key: c.key, scope, attempt: c.attempt }), o.storedHeaders);
      if (!shouldStore(result.stored.status)) throw new Rollback(result);
      const completed = await store.complete(t, c, result.stored).catch((error: unknown) => {
        throw isInFailedTransaction(error) ? new TransactionAbortedError({ cause: error }) : error;
      });
      if (!completed) throw new ClaimLost();
      return result;
    });
    log.debug({ status: normalized.stored.status }, 'response stored with the transaction');
    return { normalized, stored: true };
  }

  /** Runs the handler outside any transaction, renewing the lease while it runs. */
  async function runPlain(c: Claim, log: Logger, handler: IdempotentHandler<DB>, scope: string, route: string): Promise<{ normalized: NormalizedResponse; stored: boolean }> {
    const timer =
      o.heartbeatMs > 0
        ? setInterval(() => {
            store.renew(c).then(
              (ok) => ok || log.warn('lease renewal found the key taken over; the handler may run twice'),
              (err: unknown) => log.warn({ err }, 'lease renewal failed; will try again'),
            );
          }, o.heartbeatMs)
        : undefined;
    timer?.unref();
    let normalized: NormalizedResponse;
    try {
      normalized = normalizeResponse(await handler({ db: o.db, transactional: false, key: c.key, scope, attempt: c.attempt }), o.storedHeaders);
    } finally {
      if (timer !== undefined) clearInterval(timer);
    }
    if (!shouldStore(normalized.stored.status)) throw new Rollback(normalized);
    if (!(await store.complete(db, c, normalized.stored))) {
      metrics.increment(IdempotencyMetric.leaseLost, { route });
      log.warn('handler finished after its key was taken over by a retry; its response was not stored');
      return { normalized, stored: false };
    }
    return { normalized, stored: true };
  }

  async function releaseQuietly(c: Claim, log: Logger, route: string, why: string, pinned: Pinned): Promise<void> {
    metrics.increment(IdempotencyMetric.released, { route });
    try {
      await store.release(c, pinned === undefined ? undefined : untyped(pinned));
      log.info({ why }, 'key released; a retry will run the operation again');
    } catch (err) {
      log.warn({ err, why }, 'could not release the key; a retry can take it over when its lease ends');
    }
  }

  async function runUnprotected(request: IdempotentRequest, handler: IdempotentHandler<DB>, transactional: boolean): Promise<HandleResult> {
    const context = { key: undefined, scope: request.scope, attempt: 1 };
    const normalized = transactional
      ? await runInTransaction(untyped(o.db), false, async (trx) => normalizeResponse(await handler({ ...context, db: handlerTransaction(trx), transactional: true }), o.storedHeaders))
      : normalizeResponse(await handler({ ...context, db: o.db, transactional: false }), o.storedHeaders);
    return { outcome: 'unprotected', response: firstResponse(normalized) };
  }

  async function handle(request: IdempotentRequest, handler: IdempotentHandler<DB>, perRoute: HandleOptions = {}): Promise<HandleResult> {
    const { scope, route } = request;
    if (typeof scope !== 'string' || scope === '') {
      throw new InvalidConfigError('scope must be a non-empty string: derive it from the authenticated tenant, user or API client.');
    }
    if (typeof route !== 'string' || route === '') throw new InvalidConfigError('route must be a non-empty string, the route template such as "/payments".');
    zeroed.route(route);
    const transactional = perRoute.transactional ?? o.transactional;
    const parsed = parseIdempotencyKey(request.idempotencyKey, o.maxKeyLength, o.keyPattern);
    if (!parsed.ok) {
      if (parsed.problem === 'missing' && request.idempotencyKey === undefined && !(perRoute.requireKey ?? o.requireKey)) {
        return runUnprotected(request, handler, transactional);
      }
      metrics.increment(IdempotencyMetric.rejectedKeys, { route });
      annotateKeyOutcome('rejected', scope);
      o.logger.debug({ scope, route, problem: parsed.problem }, 'Idempotency-Key refused');
      const name = parsed.problem === 'missing' ? 'idempotency-key-missing' : 'idempotency-key-invalid';
      return { outcome: 'rejected', response: problemResponse(name, o.problemTypeBase, parsed.detail) };
    }
    const { key } = parsed;
    const log = childLogger(o.logger, { scope, idempotencyKey: key, route });
    const target = request.path ?? route;
    const fingerprinted = fingerprintRequest(request.method, target, request.body);
    if (!fingerprinted.ok) {
      log.debug({ member: fingerprinted.path }, 'JSON body repeats a member: 400');
      return { outcome: 'rejected', response: problemResponse('json-member-repeated', o.problemTypeBase, fingerprinted.detail) };
    }
    const input: ClaimInput = { scope, key, method: request.method, route: target, fingerprint: fingerprinted.fingerprint };
    // A transactional request runs on one pinned connection, from the claim (which takes its
    // holder's session lock) to the end of its transaction: a retry meanwhile knows it is alive.
    if (!transactional) return proceed(input, route, log, handler, false, undefined);
    return o.db.connection().execute((pinned) => proceed(input, route, log, handler, true, pinned));
  }

  async function proceed(input: ClaimInput, route: string, log: Logger, handler: IdempotentHandler<DB>, transactional: boolean, pinned: Pinned): Promise<HandleResult> {
    const { scope, key } = input;
    const { outcome, locked } = await claimOn(input, pinned === undefined ? undefined : untyped(pinned));
    try {
      return await settle(outcome, log, handler, transactional, pinned, scope, route);
    } finally {
      if (locked && pinned !== undefined) {
        await store.unlock(untyped(pinned), scope, key).catch((err: unknown) => log.warn({ err }, 'could not release the key holder lock; it ends with the connection'));
      }
    }
  }

  async function settle(outcome: ClaimOutcome, log: Logger, handler: IdempotentHandler<DB>, transactional: boolean, pinned: Pinned, scope: string, route: string): Promise<HandleResult> {
    switch (outcome.kind) {
      case 'replay':
        metrics.increment(IdempotencyMetric.replays, { route });
        annotateKeyOutcome('replayed', scope);
        log.debug({ status: outcome.response.status }, 'replaying the stored response');
        return { outcome: 'replayed', response: replayResponse(outcome.response, o.replayHeader) };
      case 'conflict':
        metrics.increment(IdempotencyMetric.conflicts, { route });
        annotateKeyOutcome('conflict', scope);
        log.debug('a request with this key is still running: 409');
        return {
          outcome: 'conflict',
          response: problemResponse('idempotency-key-in-use', o.problemTypeBase, 'A request with the same Idempotency-Key is still being processed; retry later.', {
            'retry-after': String(outcome.retryAfterSeconds),
          }),
        };
      case 'mismatch':
        metrics.increment(IdempotencyMetric.mismatches, { route });
        annotateKeyOutcome('mismatch', scope);
        log.info('key reused with a different request: 422');
        return {
          outcome: 'mismatch',
          response: problemResponse('idempotency-key-reused', o.problemTypeBase, 'This Idempotency-Key was already used with a different request (method, route or body); use a new key for a new request.'),
        };
      case 'claimed':
        break;
    }
    const c = outcome.claim;
    metrics.increment(IdempotencyMetric.claims, { route });
    annotateKeyOutcome(outcome.takeover ? 'takeover' : 'claimed', scope);
    if (outcome.takeover) {
      metrics.increment(IdempotencyMetric.takeovers, { route });
      log.info({ attempt: c.attempt }, 'took over a key whose lease had run out; running the operation again');
    } else {
      log.debug({ attempt: c.attempt }, 'key claimed');
    }
    try {
      const { normalized, stored } = await inFlight.run(route, () => (transactional ? runTransactional(c, log, handler, scope, pinned) : runPlain(c, log, handler, scope, route)));
      return { outcome: 'executed', response: firstResponse(normalized), stored, takeover: outcome.takeover };
    } catch (err) {
      if (err instanceof Rollback) {
        await releaseQuietly(c, log, route, `status ${err.response.stored.status} is not stored`, pinned);
        return { outcome: 'executed', response: firstResponse(err.response), stored: false, takeover: outcome.takeover };
      }
      if (err instanceof ClaimLost) {
        metrics.increment(IdempotencyMetric.leaseLost, { route });
        log.warn('the key was taken over before the transaction began; nothing was done');
        return {
          outcome: 'conflict',
          response: problemResponse('idempotency-key-in-use', o.problemTypeBase, 'A request with the same Idempotency-Key is being processed; retry later.', {
            'retry-after': String(o.retryAfterSeconds),
          }),
        };
      }
      await releaseQuietly(c, log, route, 'handler failed', pinned);
      throw err;
    }
  }

  async function prune(options: PruneOptions = {}): Promise<number> {
    const batchSize = options.batchSize ?? 500;
    const maxBatches = options.maxBatches ?? Number.POSITIVE_INFINITY;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000) {
      throw new InvalidConfigError(`prune batchSize must be an integer from 1 to 100000, got ${JSON.stringify(batchSize)}.`);
    }
    if (maxBatches !== Number.POSITIVE_INFINITY && (!Number.isInteger(maxBatches) || maxBatches < 1)) {
      throw new InvalidConfigError(`prune maxBatches must be a positive integer, got ${JSON.stringify(maxBatches)}.`);
    }
    let total = 0;
    for (let batch = 0; batch < maxBatches; batch++) {
      const deleted = await store.pruneBatch(batchSize);
      total += deleted;
      if (deleted < batchSize) break;
    }
    if (total > 0) metrics.increment(IdempotencyMetric.pruned, {}, total);
    o.logger.debug({ deleted: total }, 'expired idempotency keys pruned');
    return total;
  }

  return Object.freeze({ options: o, handle, claim, complete, release, prune });
}
