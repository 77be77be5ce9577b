import { createDatabase, type Database, type Logger } from '@effectively/core';
import { sql } from 'kysely';

/**
 * Leader election for relays: at most one relay per schema publishes at a time, so two
 * relays never interleave the rows of one key (fault F31).
 */
export interface LeaderLock {
  /**
   * Takes the lock, or confirms this relay still holds it. Resolves `false` on standby and
   * when the lock was just found lost (its connection died); the next call competes for it
   * again. Never throws for connection trouble.
   */
  acquire(): Promise<boolean>;
  /** Releases the lock (if held) and closes its connection. */
  close(): Promise<void>;
}

/** Options for {@link createAdvisoryLeaderLock}. */
export interface AdvisoryLeaderLockOptions {
  /** Postgres URL; the lock gets one connection of its own, kept open. */
  databaseUrl: string;
  /** The schema the lock is for (already checked with `assertIdentifier`). */
  schema: string;
  /** `application_name` of the lock connection; default `effectively-relay-lock`. */
  applicationName?: string;
  logger: Logger;
}

/**
 * A session-level `pg_try_advisory_lock(hashtext('effectively:relay:' || schema))` held on a
 * dedicated connection. The session that took it is remembered by backend pid and start time;
 * if that connection dies (server restart, `pg_terminate_backend`, network), Postgres releases
 * the lock and the next {@link LeaderLock.acquire} sees a different session and reports the loss,
 * so publishing stops until a later call takes the lock again.
 */
export function createAdvisoryLeaderLock(options: AdvisoryLeaderLockOptions): LeaderLock {
  const key = `effectively:relay:${options.schema}`;
  const log = options.logger;
  let database: Database | undefined;
  let held: string | undefined;
  let closed = false;

  const open = (): Database =>
    (database ??= createDatabase({
      connectionString: options.databaseUrl,
      max: 1,
      applicationName: options.applicationName ?? 'effectively-relay-lock',
      logger: log,
      // Never close the idle connection: it is the lock. Fail fast when the server is unreachable.
      pool: { idleTimeoutMillis: 0, connectionTimeoutMillis: 5_000, keepAlive: true, query_timeout: 10_000 },
    }));

  return {
    async acquire(): Promise<boolean> {
      if (closed) return false;
      try {
        const db = open().db;
        if (held !== undefined) {
          const { rows } = await sql<{ session: string }>`
            SELECT pg_backend_pid()::text || '@' || (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS session`.execute(db);
          if (rows[0]?.session === held) return true;
          log.warn({ schema: options.schema }, 'relay lost its leader lock (its connection was replaced); publishing stops until the lock is taken again');
          held = undefined;
          // Report the loss; the next call (after the standby pause) competes for the lock again.
          return false;
        }
        const { rows } = await sql<{ locked: boolean; session: string }>`
          SELECT pg_try_advisory_lock(hashtext(${key})) AS locked,
                 pg_backend_pid()::text || '@' || (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS session`.execute(db);
        const row = rows[0];
        if (row?.locked === true) {
          held = row.session;
          log.info({ schema: options.schema }, 'relay took the leader lock; publishing');
          return true;
        }
        return false;
      } catch (err) {
        if (held !== undefined) log.warn({ err, schema: options.schema }, 'relay cannot confirm its leader lock; publishing stops until it is taken again');
        else log.debug({ err, schema: options.schema }, 'relay could not try the leader lock');
        held = undefined;
        return false;
      }
    },
    async close(): Promise<void> {
      closed = true;
      held = undefined;
      const d = database;
      database = undefined;
      // Closing the session releases every advisory lock it holds.
      if (d !== undefined) await d.destroy();
    },
  };
}
