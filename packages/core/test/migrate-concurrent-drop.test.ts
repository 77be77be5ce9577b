import { createDatabase, migrate } from '@effectively/core';
import { testServices, uniqueName } from '@effectively/testkit';
import { sql } from 'kysely';

/**
 * Migrating one schema while other schemas of the same database are being dropped (test files
 * finishing, tenants removed): kysely's introspection resolves every schema by name, and one
 * dropped in between used to fail the migration with `schema "<another>" does not exist`.
 */
describe('migrate while other schemas are dropped', () => {
  const { databaseUrl } = testServices();

  it('never fails because of a schema that is not its own', async () => {
    const database = createDatabase({ connectionString: databaseUrl, max: 8 });
    const created: string[] = [];
    try {
      for (let round = 0; round < 6; round++) {
        const doomed = Array.from({ length: 4 }, () => uniqueName('mig_doomed'));
        await Promise.all(doomed.map((d) => sql`CREATE SCHEMA ${sql.id(d)}`.execute(database.db).then(() => sql`CREATE TABLE ${sql.id(d, 't')} (id bigserial primary key)`.execute(database.db))));
        const fresh = Array.from({ length: 3 }, () => uniqueName('mig_fresh'));
        created.push(...fresh);
        const results = await Promise.allSettled([
          ...fresh.map((schema) => migrate(database.db, { schema })),
          ...doomed.map((d) => sql`DROP SCHEMA ${sql.id(d)} CASCADE`.execute(database.db)),
        ]);
        expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
      }
    } finally {
      for (const schema of created) await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(database.db);
      await database.destroy();
    }
  });
});
