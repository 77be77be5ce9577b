import { Migrator, sql, type Kysely, type MigrationResult } from 'kysely';
import { migrationsFor, MIGRATION_TABLE, MIGRATION_LOCK_TABLE } from '@effectively/migrations';
import { MigrationError } from './errors';
import { untyped } from './database-type';
import { assertIdentifier } from './identifiers';

/** Options for {@link migrate}. */
export interface MigrateOptions {
  /** The schema that holds effectively's tables; created if missing. Default `effectively`. */
  schema?: string;
}

/** What {@link migrate} did. */
export interface MigrateOutcome {
  /** The schema migrated. */
  schema: string;
  /** Names of the migrations applied by this call (empty when already up to date). */
  applied: string[];
}

/**
 * Brings `schema` up to the latest migration. Safe to call from many processes at once:
 * creation of the schema and every migration run happen under Postgres advisory locks, so
 * concurrent callers wait and then find nothing left to do. Idempotent.
 *
 * @throws MigrationError when a migration fails (the failed migration is rolled back).
 */
export async function migrate<DB>(database: Kysely<DB>, options: MigrateOptions = {}): Promise<MigrateOutcome> {
  const db = untyped(database);
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  // CREATE SCHEMA IF NOT EXISTS is not safe under concurrency (two creators race on the
  // catalog's unique index), so serialise it on a lock keyed by the schema name.
  await db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtext(${'effectively:migrate:' + schema}))`.execute(trx);
    await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(schema)}`.execute(trx);
  });
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrationsFor(schema) },
    migrationTableSchema: schema,
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
  });
  const { error, results } = await migrator.migrateToLatest();
  const applied = (results ?? []).filter((r: MigrationResult) => r.status === 'Success').map((r) => r.migrationName);
  if (error !== undefined) {
    const failed = (results ?? []).find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new MigrationError(
      `Migration ${failed} failed on schema "${schema}": ${error instanceof Error ? error.message : String(error)}. ` +
        'Nothing of that migration was kept; fix the cause and run migrate again.',
      error,
    );
  }
  return { schema, applied };
}
