import { sql, type Kysely } from 'kysely';
import { assertIdentifier, createDatabase, migrate, type Database } from '@effectively/core';
import { uniqueName } from '../random';

/** A schema of its own for one test file (or one demo run), migrated and ready. */
export interface TestSchema {
  readonly schema: string;
  readonly database: Database;
  readonly db: Kysely<unknown>;
  /** Drops the schema and closes the pool. */
  drop(): Promise<void>;
}

/**
 * Creates a uniquely named schema in the database at `url`, applies effectively's migrations
 * to it, and returns a pool. Test files that each use one never see each other's rows.
 */
export async function createTestSchema(url: string, prefix: string, options: { migrate?: boolean; max?: number } = {}): Promise<TestSchema> {
  const schema = assertIdentifier(uniqueName(prefix), 'schema');
  const database = createDatabase({ connectionString: url, max: options.max ?? 10, applicationName: `effectively-test-${schema}` });
  if (options.migrate ?? true) await migrate(database.db, { schema });
  else await sql`CREATE SCHEMA ${sql.id(schema)}`.execute(database.db);
  return {
    schema,
    database,
    db: database.db,
    drop: async () => {
      try {
        await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(database.db);
      } finally {
        await database.destroy();
      }
    },
  };
}
