import { sql, type Kysely } from 'kysely';
import { MIGRATIONS } from '@effectively/migrations';
import { createDatabase, migrate, MigrationError, InvalidIdentifierError, type Database } from '../src';
import { testServices, uniqueName } from '@effectively/testkit';

describe('migrate', () => {
  const { databaseUrl } = testServices();
  let database: Database;
  const schemas: string[] = [];
  beforeAll(() => {
    database = createDatabase({ connectionString: databaseUrl, max: 12 });
  });
  afterAll(async () => {
    for (const s of schemas) await sql`DROP SCHEMA IF EXISTS ${sql.id(s)} CASCADE`.execute(database.db);
    await database.destroy();
  });
  const fresh = (): string => {
    const s = uniqueName('mig');
    schemas.push(s);
    return s;
  };

  it('applies the migrations once, then reports nothing to do', async () => {
    const schema = fresh();
    const first = await migrate(database.db, { schema });
    expect(first.applied).toEqual(MIGRATIONS.map(([name]) => name));
    const second = await migrate(database.db, { schema });
    expect(second.applied).toEqual([]);
  });

  it('lets many processes migrate at once without racing', async () => {
    const schema = fresh();
    const pools = Array.from({ length: 6 }, () => createDatabase({ connectionString: databaseUrl, max: 1 }));
    try {
      const outcomes = await Promise.all(pools.map((p) => migrate(p.db, { schema })));
      expect(outcomes.flatMap((o) => o.applied)).toEqual(MIGRATIONS.map(([name]) => name));
    } finally {
      await Promise.all(pools.map((p) => p.destroy()));
    }
  });

  it('writes and reads through Kysely in the migrated schema', async () => {
    const schema = fresh();
    await migrate(database.db, { schema });
    const db = database.db.withSchema(schema) as unknown as Kysely<{ effectively_meta: { key: string; value: string } }>;
    await db.insertInto('effectively_meta').values({ key: 'hello', value: 'world' }).execute();
    const row = await db.selectFrom('effectively_meta').select(['key', 'value']).where('key', '=', 'hello').executeTakeFirstOrThrow();
    expect(row).toEqual({ key: 'hello', value: 'world' });
  });

  it('refuses a hostile schema name before touching the database', async () => {
    await expect(migrate(database.db, { schema: 'x"; DROP TABLE users; --' })).rejects.toThrow(InvalidIdentifierError);
    await expect(migrate(database.db, { schema: 'a'.repeat(64) })).rejects.toThrow(/63 bytes/);
    await expect(migrate(database.db, { schema: 'select' })).rejects.toThrow(/reserved/);
    expect(MigrationError).toBeDefined();
  });
});
