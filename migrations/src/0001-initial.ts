import { sql, type Migration } from 'kysely';

/**
 * The first migration: a metadata table recording the library's schema version history, so
 * operators can see who migrated and when.
 */
export function initial(schema: string): Migration {
  return {
    async up(db) {
      await db.schema
        .withSchema(schema)
        .createTable('effectively_meta')
        .ifNotExists()
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute();
    },
    async down(db) {
      await db.schema.withSchema(schema).dropTable('effectively_meta').ifExists().execute();
    },
  };
}
