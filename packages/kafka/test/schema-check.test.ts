import { SchemaNotMigratedError } from '@effectively/core';
import { MIGRATIONS, MIGRATION_LOCK_TABLE, MIGRATION_TABLE, migrationsFor } from '@effectively/migrations';
import { createTestSchema, createTopics, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { Migrator } from 'kysely';
import { IdempotentConsumer } from '../src';

/** start() on a schema this version cannot use fails at once, naming the schema and the fix. */
describe('start() on a wrong schema', () => {
  const { brokers, databaseUrl } = testServices();
  const schemas: TestSchema[] = [];
  afterAll(async () => Promise.all(schemas.map((s) => s.drop())));

  let topic: string;
  beforeAll(async () => {
    [topic] = (await createTopics(testKafka(brokers), [{ prefix: 'schema_check', partitions: 1 }])) as [string];
  });

  const consumerOn = (s: TestSchema): IdempotentConsumer =>
    new IdempotentConsumer({ client: testClient(), brokers, groupId: uniqueName('g'), topics: [topic], db: s.db, schema: s.schema, handler: async () => undefined });

  it('rejects a schema that was never migrated', async () => {
    const s = await createTestSchema(databaseUrl, 'never', { migrate: false });
    schemas.push(s);
    const consumer = consumerOn(s);
    const started = consumer.start();
    await expect(started).rejects.toThrow(SchemaNotMigratedError);
    await expect(started).rejects.toThrow(`Schema "${s.schema}" has never been migrated. Run \`effectively migrate --schema ${s.schema}\``);
    await consumer.stop();
  });

  it('rejects a schema migrated by an older version, listing what it lacks', async () => {
    const s = await createTestSchema(databaseUrl, 'older', { migrate: false });
    schemas.push(s);
    const names = MIGRATIONS.map(([name]) => name);
    const older = names[names.length - 2] as string;
    const migrator = new Migrator({ db: s.db, provider: { getMigrations: async () => migrationsFor(s.schema) }, migrationTableSchema: s.schema, migrationTableName: MIGRATION_TABLE, migrationLockTableName: MIGRATION_LOCK_TABLE });
    expect((await migrator.migrateTo(older)).error).toBeUndefined();
    const consumer = consumerOn(s);
    const error = await consumer.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SchemaNotMigratedError);
    expect((error as SchemaNotMigratedError).missing).toEqual(names.slice(names.length - 1));
    expect((error as Error).message).toContain(`Schema "${s.schema}" was migrated by an older version`);
    expect((error as Error).message).toContain(`effectively migrate --schema ${s.schema}`);
    await consumer.stop();
  });
});
