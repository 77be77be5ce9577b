import { Migrator, sql, type Kysely, type MigrationResult } from 'kysely';
import { migrationsFor, MIGRATIONS, MIGRATION_TABLE, MIGRATION_LOCK_TABLE } from '@effectively/migrations';
import { MigrationError, SchemaNewerThanLibraryError, SchemaNotMigratedError } from './errors';
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
 * Kysely's introspection tripping over another schema changed meanwhile: a "schema does not
 * exist" (3F000) about a schema other than ours (a concurrent DROP SCHEMA), or a relation or
 * column that vanished or is half-created (42P01, 42703) while no migration has run yet.
 */
function droppedElsewhere(outcome: { error?: unknown; results?: MigrationResult[] }, schema: string): boolean {
  const error = outcome.error;
  if (typeof error !== 'object' || error === null) return false;
  const e = error as { code?: unknown; message?: unknown };
  if (e.code === '3F000') return typeof e.message === 'string' && !e.message.includes(`"${schema}"`);
  return (e.code === '42P01' || e.code === '42703') && outcome.results === undefined;
}

/** Names of the migrations recorded in `schema` (none when it has no migration table). */
async function appliedMigrations(db: Kysely<unknown>, schema: string): Promise<string[]> {
  const { rows: exists } = await sql<{ present: boolean }>`SELECT to_regclass(${`"${schema}"."${MIGRATION_TABLE}"`}) IS NOT NULL AS present`.execute(db);
  if (exists[0]?.present !== true) return [];
  const { rows } = await sql<{ name: string }>`SELECT name FROM ${sql.id(schema, MIGRATION_TABLE)} ORDER BY name`.execute(db);
  return rows.map((r) => r.name);
}

/** Refuses a schema that records migrations this version does not know (a newer version migrated it). */
function assertNotNewer(schema: string, applied: Iterable<string>): void {
  const known = new Set(MIGRATIONS.map(([name]) => name));
  const unknown = [...applied].filter((name) => !known.has(name));
  if (unknown.length > 0) throw new SchemaNewerThanLibraryError(schema, unknown);
}

/**
 * Brings `schema` up to the latest migration. Safe to call from many processes at once:
 * creation of the schema and every migration run happen under Postgres advisory locks, so
 * concurrent callers wait and then find nothing left to do. Idempotent.
 *
 * @throws MigrationError when a migration fails (the failed migration is rolled back).
 * @throws SchemaNewerThanLibraryError when a newer version migrated `schema` (nothing is changed).
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
  // A schema a newer version migrated: refused before anything runs (Kysely would only say "corrupted").
  assertNotNewer(schema, await appliedMigrations(db, schema));
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrationsFor(schema) },
    migrationTableSchema: schema,
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
  });
  let outcome = await migrator.migrateToLatest();
  // Kysely's introspection (before any migration runs) resolves every schema of the database by
  // name; one dropped meanwhile by someone else fails it with 3F000. Nothing was applied: retry.
  for (let retry = 0; retry < 5 && droppedElsewhere(outcome, schema); retry++) outcome = await migrator.migrateToLatest();
  const { error, results } = outcome;
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

/**
 * Checks that `schema` has every migration this version of the library knows (the list in
 * `@effectively/migrations`, whatever its length), without changing anything. Call it before
 * using the tables, so a wrong or stale schema fails at once instead of in every transaction.
 *
 * @throws SchemaNotMigratedError naming the schema, the missing migrations and the command that fixes it.
 * @throws SchemaNewerThanLibraryError when a newer version migrated `schema` (it records migrations this version does not know).
 * @throws InvalidIdentifierError when `schema` is not a safe identifier.
 */
export async function assertSchemaMigrated<DB>(database: Kysely<DB>, schema: string): Promise<void> {
  const db = untyped(database);
  assertIdentifier(schema, 'schema');
  const applied = new Set(await appliedMigrations(db, schema));
  assertNotNewer(schema, applied);
  const missing = MIGRATIONS.map(([name]) => name).filter((name) => !applied.has(name));
  if (missing.length > 0) throw new SchemaNotMigratedError(schema, missing, applied.size);
}
