import { migrate } from '@effectively/core';
import { MIGRATION_LOCK_TABLE, MIGRATION_TABLE, migrationsFor } from '@effectively/migrations';
import { Migrator, sql } from 'kysely';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer, type ConsumerStats } from '../src';
import { apply, createLedger, totals, waitFor, type Entry } from './support/ledger';

/**
 * Keys the library makes up (coordinates of id-less messages, `eventId: { coordinates: true }`)
 * live apart from producer ids: no id a producer sends can equal one of them.
 */
describe('derived keys never share the namespace of producer ids', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'idns');
    await createLedger(s.db, s.schema);
  });
  afterAll(async () => s.drop());

  const settled = (stats: ConsumerStats): number => stats.processed + stats.duplicates + stats.deadLettered;
  const value = (account: string): string => JSON.stringify({ account, amount: 1 });
  const consumer = (topic: string, group: string, extra: Partial<ConstructorParameters<typeof IdempotentConsumer<Entry>>[0]> = {}): IdempotentConsumer<Entry> =>
    new IdempotentConsumer<Entry>({ client: testClient(), brokers, groupId: group, topics: [topic], db: s.db, schema: s.schema, handler: async (event, { trx }) => apply(trx, s.schema, event.value), ...extra });
  const deadLetters = async (topic: string): Promise<Array<Record<string, string>>> => {
    const { rows } = await sql<{ headers: Record<string, string> }>`SELECT headers FROM ${sql.id(s.schema, 'outbox')} WHERE topic = ${`${topic}.dlq`} ORDER BY id`.execute(s.db);
    return rows.map((r) => r.headers);
  };

  it('producer ids spelling `invalid:<topic>/0/<offset>` of later id-less messages: offsets 0 and 3 applied once, 1 and 2 dead-lettered', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'idns', partitions: 1 }])) as [string];
    await produceMessages(kafka, topic, [
      { key: 'k', value: value('offset-0'), headers: { 'event-id': `invalid:${topic}/0/1` } },
      { key: 'k', value: value('offset-1') },
      { key: 'k', value: value('offset-2') },
      { key: 'k', value: value('offset-3'), headers: { 'event-id': `invalid:${topic}/0/2` } },
    ]);
    const c = consumer(topic, uniqueName('g'));
    await c.start();
    try {
      await waitFor(async () => settled(c.stats), (n) => n >= 4, 60_000);
      expect(await totals(s.db, s.schema)).toEqual({ 'offset-0': { total: 1, applied: 1 }, 'offset-3': { total: 1, applied: 1 } });
      expect(c.stats).toMatchObject({ processed: 2, deadLettered: 2, duplicates: 0, conflicts: 0 });
      const dlq = await deadLetters(topic);
      expect(dlq.map((h) => [h['dlq-original-offset'], h['dlq-reason']])).toEqual([
        ['1', 'invalid-event-id'],
        ['2', 'invalid-event-id'],
      ]);
      expect(dlq.map((h) => h['dlq-event-id-origin'])).toEqual(['derived', 'derived']);
    } finally {
      await c.stop();
    }
  });

  it('coordinates mode: a derived key equal to an id a producer sent in the same group is not a duplicate', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'idns_coord', partitions: 1 }])) as [string];
    const group = uniqueName('g');
    // Offset 0 carries the producer id `<topic>/0/1`, the very key coordinates mode derives for offset 1.
    await produceMessages(kafka, topic, [{ key: 'k', value: value('coord-0'), headers: { 'event-id': `${topic}/0/1` } }]);
    const byHeader = consumer(topic, group);
    await byHeader.start();
    try {
      await waitFor(async () => settled(byHeader.stats), (n) => n >= 1, 60_000);
    } finally {
      await byHeader.stop();
    }
    await produceMessages(kafka, topic, [{ key: 'k', value: value('coord-1') }]);
    const byCoordinates = consumer(topic, group, { eventId: { coordinates: true } });
    await byCoordinates.start();
    try {
      await waitFor(async () => settled(byCoordinates.stats), (n) => n >= 1, 60_000);
      expect(byCoordinates.stats).toMatchObject({ processed: 1, duplicates: 0 });
      const t = await totals(s.db, s.schema);
      expect([t['coord-0'], t['coord-1']]).toEqual([
        { total: 1, applied: 1 },
        { total: 1, applied: 1 },
      ]);
    } finally {
      await byCoordinates.stop();
    }
  });

  it('dead letters of refused ids keep the offending id, escaped when it is not clean text', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'idns_refused', partitions: 1 }])) as [string];
    await produceMessages(kafka, topic, [
      { key: 'k', value: value('r'), headers: { 'event-id': Buffer.from([0xc3, 0x28, 0xff]) } },
      { key: 'k', value: value('r'), headers: { 'event-id': 'nul\u0000id' } },
      { key: 'k', value: value('r'), headers: { 'event-id': ['one', 'two'] } },
      { key: 'k', value: value('r'), headers: { 'event-id': 'x'.repeat(300) } },
      { key: 'k', value: value('r'), headers: { 'event-id': '' } },
      { key: 'k', value: value('r') },
    ]);
    const c = consumer(topic, uniqueName('g'));
    await c.start();
    try {
      await waitFor(async () => settled(c.stats), (n) => n >= 6, 60_000);
      const dlq = await deadLetters(topic);
      expect(dlq.map((h) => h['dlq-refused-event-id'])).toEqual([
        `base64:${Buffer.from([0xc3, 0x28, 0xff]).toString('base64')}`,
        `base64:${Buffer.from('nul\u0000id').toString('base64')}`,
        '["one","two"]',
        'x'.repeat(300),
        '',
        undefined,
      ]);
      expect(dlq.every((h) => h['dlq-reason'] === 'invalid-event-id')).toBe(true);
    } finally {
      await c.stop();
    }
  });

  it('migration 0006 keeps existing rows meaning the same: earlier derived keys become derived, everything else stays a producer id', async () => {
    const old = await createTestSchema(databaseUrl, 'idns_upgrade', { migrate: false });
    try {
      const migrator = new Migrator({ db: old.db, provider: { getMigrations: async () => migrationsFor(old.schema) }, migrationTableSchema: old.schema, migrationTableName: MIGRATION_TABLE, migrationLockTableName: MIGRATION_LOCK_TABLE });
      expect((await migrator.migrateTo('0004-outbox-lanes')).error).toBeUndefined();
      const table = sql.id(old.schema, 'processed_events');
      await sql`INSERT INTO ${table} (consumer_group, event_id, status, payload_hash, topic, partition, kafka_offset, error) VALUES
        ('g', 'invalid:t/0/1', 'dead_lettered', 'h', 't', 0, 1, 'invalid-event-id: missing: header "event-id" is missing'),
        ('g', 't/0/2', 'processed', 'h', 't', 0, 2, NULL),
        ('g', 'invalid:t/0/7', 'processed', 'h', 't', 0, 3, NULL),
        ('g', 'order-1', 'processed', 'h', 't', 0, 4, NULL),
        ('g', 't/0/9', 'processed', 'h', 't', 0, 5, NULL)`.execute(old.db);
      await migrate(old.db, { schema: old.schema });
      const { rows } = await sql<{ event_id: string; id_origin: string }>`SELECT event_id, id_origin FROM ${table} ORDER BY kafka_offset`.execute(old.db);
      expect(rows.map((r) => [r.event_id, r.id_origin])).toEqual([
        ['invalid:t/0/1', 'derived'],
        ['t/0/2', 'derived'],
        ['invalid:t/0/7', 'producer'],
        ['order-1', 'producer'],
        ['t/0/9', 'producer'],
      ]);
    } finally {
      await old.drop();
    }
  });
});
