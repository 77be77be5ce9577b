import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { StoredResponse } from './types';

/** A key record as read back from `idempotency_keys`, with time comparisons made by Postgres's clock. */
export interface KeyRecord {
  scope: string;
  key: string;
  fingerprint: string;
  status: 'in_progress' | 'completed';
  leaseToken: string;
  attempts: number;
  /** `locked_until` is still in the future. */
  leaseLive: boolean;
  /** `expires_at` has passed: the key may be reused. */
  expired: boolean;
  /** Whole seconds until `locked_until`, rounded up (0 when it has passed or there is none). */
  leaseSecondsLeft: number;
  response: StoredResponse | undefined;
}

/** Identifies one request's claim on a key. */
export interface ClaimRef {
  scope: string;
  key: string;
  leaseToken: string;
}

interface KeyRow {
  scope: string;
  key: string;
  fingerprint: string;
  status: 'in_progress' | 'completed';
  lease_token: string;
  attempts: number;
  lease_live: boolean;
  expired: boolean;
  lease_seconds_left: number;
  response_status: number | null;
  response_headers: Record<string, string> | null;
  response_body: Buffer | null;
}

/** Anything queries can run on: the pool's Kysely or a transaction. */
type Executor = Kysely<unknown>;

function after(ms: number): RawBuilder<Date> {
  return sql<Date>`now() + ${ms}::float8 * interval '1 millisecond'`;
}

/**
 * The SQL of the key store. Every time comparison uses Postgres's `now()`, so servers with
 * skewed clocks agree on leases and expiry. Values are always bound parameters.
 */
export class KeyStore {
  private readonly table: RawBuilder<unknown>;
  private readonly lockSpace: string;

  constructor(
    private readonly db: Executor,
    schema: string,
    private readonly leaseMs: number,
    private readonly ttlMs: number,
  ) {
    this.table = sql.id(schema, 'idempotency_keys') as RawBuilder<unknown>;
    this.lockSpace = `effectively.idempotency:${schema}`;
  }

  /** The two-part advisory lock key of (scope, key): a hash, so two keys may share one (harmlessly: see {@link holderAlive}). */
  private lockKey(scope: string, key: string): RawBuilder<unknown> {
    return sql`hashtext(${this.lockSpace}), hashtext(${scope} || chr(10) || ${key})`;
  }

  /**
   * The select list that takes the holder's session lock when the claim statement returns a row
   * (so it is held before the claim is visible), on a connection pinned for the whole request.
   */
  private holdLock(ref: ClaimRef, pinned: Executor | undefined): RawBuilder<unknown> {
    return pinned === undefined ? sql`false` : sql`pg_try_advisory_lock(${this.lockKey(ref.scope, ref.key)})`;
  }

  /**
   * Inserts a fresh `in_progress` record; `undefined` when the key already exists. Given a
   * `pinned` connection, the same statement takes the holder's session lock on it (`locked`;
   * release it with {@link unlock} when the request is done; it dies with the connection).
   */
  async insert(ref: ClaimRef, method: string, route: string, fingerprint: string, pinned?: Executor): Promise<{ locked: boolean } | undefined> {
    const r = await sql<{ locked: boolean }>`
      WITH claimed AS (
        INSERT INTO ${this.table} (scope, key, method, route, fingerprint, status, lease_token, locked_until, expires_at)
        VALUES (${ref.scope}, ${ref.key}, ${method}, ${route}, ${fingerprint}, 'in_progress', ${ref.leaseToken}, ${after(this.leaseMs)}, ${after(this.ttlMs)})
        ON CONFLICT (scope, key) DO NOTHING
        RETURNING attempts)
      SELECT ${this.holdLock(ref, pinned)} AS locked FROM claimed`.execute(pinned ?? this.db);
    const row = r.rows[0];
    return row === undefined ? undefined : { locked: row.locked };
  }

  /**
   * Whether the holder of (scope, key) is known to be alive: a session holds its lock (taken by
   * a transactional request's claim, held until its transaction ended). A crashed holder's
   * connection is gone and its lock with it. A hash collision with another live key answers
   * `true`, which only makes `Retry-After` shorter.
   */
  async holderAlive(scope: string, key: string, on?: Executor): Promise<boolean> {
    const r = await sql<{ alive: boolean }>`
      SELECT EXISTS (
        SELECT 1 FROM pg_locks l, (SELECT ${this.lockKey(scope, key)}) AS k(a, b)
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = k.a::oid AND l.objid = k.b::oid) AS alive`.execute(on ?? this.db);
    return r.rows[0]?.alive === true;
  }

  /** Releases the holder's session lock taken by {@link insert} or {@link takeOver} on `pinned`. */
  async unlock(pinned: Executor, scope: string, key: string): Promise<void> {
    await sql`SELECT pg_advisory_unlock(${this.lockKey(scope, key)})`.execute(pinned);
  }

  /** Reads the record of (scope, key), or `undefined` when there is none. */
  async read(scope: string, key: string, on?: Executor): Promise<KeyRecord | undefined> {
    const r = await sql<KeyRow>`
      SELECT scope, key, fingerprint, status, lease_token, attempts,
             coalesce(locked_until > now(), false) AS lease_live, expires_at <= now() AS expired,
             coalesce(ceil(greatest(0, extract(epoch FROM locked_until - now())))::int, 0) AS lease_seconds_left,
             response_status, response_headers, response_body
      FROM ${this.table} WHERE scope = ${scope} AND key = ${key}`.execute(on ?? this.db);
    const row = r.rows[0];
    if (row === undefined) return undefined;
    return {
      scope: row.scope,
      key: row.key,
      fingerprint: row.fingerprint,
      status: row.status,
      leaseToken: row.lease_token,
      attempts: row.attempts,
      leaseLive: row.lease_live,
      expired: row.expired,
      leaseSecondsLeft: row.lease_seconds_left,
      response:
        row.status === 'completed' && row.response_status !== null && row.response_body !== null
          ? { status: row.response_status, headers: row.response_headers ?? {}, body: row.response_body }
          : undefined,
    };
  }

  /**
   * Compare-and-swap takeover of a record whose lease ran out (same fingerprint) or that has
   * expired (any fingerprint): succeeds only if the record still carries `observedToken`, so of
   * many concurrent takers exactly one wins. `SKIP LOCKED` leaves alone a record whose holder
   * is alive in a transaction, however late it is. Returns the new attempt number (and, given a
   * `pinned` connection, whether the holder's session lock was taken, as by {@link insert}).
   */
  async takeOver(observedToken: string, ref: ClaimRef, method: string, route: string, fingerprint: string, pinned?: Executor): Promise<{ attempts: number; locked: boolean } | undefined> {
    const r = await sql<{ attempts: number; locked: boolean }>`
      WITH candidate AS (
        SELECT scope, key, expires_at <= now() AS expired FROM ${this.table}
        WHERE scope = ${ref.scope} AND key = ${ref.key} AND lease_token = ${observedToken}
          AND ((status = 'in_progress' AND locked_until <= now() AND fingerprint = ${fingerprint}) OR expires_at <= now())
        FOR UPDATE SKIP LOCKED
      ), taken AS (
      UPDATE ${this.table} AS t SET
        lease_token = ${ref.leaseToken},
        locked_until = ${after(this.leaseMs)},
        status = 'in_progress',
        method = ${method}, route = ${route}, fingerprint = ${fingerprint},
        response_status = NULL, response_headers = NULL, response_body = NULL, completed_at = NULL,
        attempts = CASE WHEN candidate.expired THEN 1 ELSE t.attempts + 1 END,
        created_at = CASE WHEN candidate.expired THEN now() ELSE t.created_at END,
        expires_at = CASE WHEN candidate.expired THEN ${after(this.ttlMs)} ELSE t.expires_at END
      FROM candidate
      WHERE t.scope = candidate.scope AND t.key = candidate.key
      RETURNING t.attempts)
      SELECT attempts, ${this.holdLock(ref, pinned)} AS locked FROM taken`.execute(pinned ?? this.db);
    return r.rows[0];
  }

  /**
   * In the handler's transaction: locks our own record, proving the claim is still ours and
   * keeping takers away until the transaction ends. `false` when the claim was lost.
   */
  async lockOwn(trx: Executor, ref: ClaimRef): Promise<boolean> {
    const r = await sql<{ ok: number }>`
      SELECT 1 AS ok FROM ${this.table}
      WHERE scope = ${ref.scope} AND key = ${ref.key} AND lease_token = ${ref.leaseToken} AND status = 'in_progress'
      FOR UPDATE`.execute(trx);
    return r.rows.length === 1;
  }

  /** Stores the response and marks the record completed, if the claim is still ours. */
  async complete(executor: Executor, ref: ClaimRef, response: StoredResponse): Promise<boolean> {
    const r = await sql<{ ok: number }>`
      UPDATE ${this.table} SET status = 'completed', locked_until = NULL, completed_at = now(),
        response_status = ${response.status}, response_headers = ${JSON.stringify(response.headers)}::jsonb, response_body = ${response.body}
      WHERE scope = ${ref.scope} AND key = ${ref.key} AND lease_token = ${ref.leaseToken} AND status = 'in_progress'
      RETURNING 1 AS ok`.execute(executor);
    return r.rows.length === 1;
  }

  /** Deletes our `in_progress` record so the client may retry at once; `false` when it was no longer ours. */
  async release(ref: ClaimRef, on?: Executor): Promise<boolean> {
    const r = await sql<{ ok: number }>`
      DELETE FROM ${this.table}
      WHERE scope = ${ref.scope} AND key = ${ref.key} AND lease_token = ${ref.leaseToken} AND status = 'in_progress'
      RETURNING 1 AS ok`.execute(on ?? this.db);
    return r.rows.length === 1;
  }

  /** Pushes our lease's end `leaseMs` into the future; `false` when the claim was lost. */
  async renew(ref: ClaimRef): Promise<boolean> {
    const r = await sql<{ ok: number }>`
      UPDATE ${this.table} SET locked_until = ${after(this.leaseMs)}
      WHERE scope = ${ref.scope} AND key = ${ref.key} AND lease_token = ${ref.leaseToken} AND status = 'in_progress'
      RETURNING 1 AS ok`.execute(this.db);
    return r.rows.length === 1;
  }

  /**
   * Deletes at most `limit` expired records (skipping ones locked by a running transaction
   * and ones whose holder still has a live lease); returns how many.
   */
  async pruneBatch(limit: number): Promise<number> {
    const r = await sql<{ ok: number }>`
      DELETE FROM ${this.table} AS t
      USING (
        SELECT scope, key FROM ${this.table}
        WHERE expires_at <= now() AND (status = 'completed' OR locked_until <= now())
        ORDER BY expires_at
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      ) AS victim
      WHERE t.scope = victim.scope AND t.key = victim.key
      RETURNING 1 AS ok`.execute(this.db);
    return r.rows.length;
  }
}
