import { Kysely, PostgresDialect } from 'kysely';
import { Pool, type PoolConfig } from 'pg';
import type { Logger } from './logger';
import { loggerOption } from './logger';

/** Options for {@link createDatabase}. */
export interface DatabaseOptions {
  /** A `postgres://` connection string. */
  connectionString: string;
  /** Pool size; default 10. */
  max?: number;
  /** Name reported in `pg_stat_activity.application_name`; default `effectively`. */
  applicationName?: string;
  /** Where pool errors are reported; default silent. */
  logger?: Logger;
  /** Extra `pg` pool settings. */
  pool?: Omit<PoolConfig, 'connectionString' | 'max' | 'application_name'>;
}

/** A Kysely instance together with the pool under it, so both can be closed together. */
export interface Database<DB = unknown> {
  readonly db: Kysely<DB>;
  readonly pool: Pool;
  /** Closes the pool; waits for checked-out connections to be released. */
  destroy(): Promise<void>;
}

/**
 * Creates a Kysely instance over a `pg` pool. Connection errors (an idle or checked-out
 * connection killed by the server, e.g. `pg_terminate_backend` or a restart) are logged
 * instead of crashing the process; the pool replaces the connection on next use.
 */
export function createDatabase<DB = unknown>(options: DatabaseOptions): Database<DB> {
  const logger = loggerOption(options.logger, 'createDatabase options.logger');
  const pool = new Pool({
    ...options.pool,
    connectionString: options.connectionString,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'effectively',
  });
  pool.on('error', (err) => {
    logger.warn({ err }, 'idle Postgres connection failed; the pool will open a new one');
  });
  // A connection that dies while checked out (pg_terminate_backend, a server restart) emits
  // 'error' on its client; without a listener that would crash the process. The query in
  // flight fails with the same error, which the caller handles (retry, roll back).
  pool.on('connect', (client) => {
    client.on('error', (err) => logger.warn({ err }, 'Postgres connection lost while in use'));
  });
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  let destroyed: Promise<void> | undefined;
  return {
    db,
    pool,
    destroy: () => (destroyed ??= db.destroy()),
  };
}
