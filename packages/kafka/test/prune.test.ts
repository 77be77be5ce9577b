import { sql } from 'kysely';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { pruneProcessedEvents } from '../src';
import { count } from './support/ledger';

describe('pruneProcessedEvents', () => {
  const { databaseUrl } = testServices();
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'prune');
  });
  afterAll(async () => s.drop());

  it('deletes only records older than the window, in small batches', async () => {
    const table = sql.id(s.schema, 'processed_events');
    await sql`INSERT INTO ${table} (consumer_group, event_id, status, payload_hash, topic, partition, kafka_offset, processed_at)
              SELECT 'g', 'old-' || i, 'processed', 'h', 't', 0, i, now() - interval '8 days' FROM generate_series(1, 2500) i`.execute(s.db);
    await sql`INSERT INTO ${table} (consumer_group, event_id, status, payload_hash, topic, partition, kafka_offset)
              SELECT 'g', 'new-' || i, 'processed', 'h', 't', 0, i FROM generate_series(1, 300) i`.execute(s.db);
    const deleted = await pruneProcessedEvents(s.db, { schema: s.schema, olderThanMs: 7 * 24 * 3600 * 1000, batchSize: 1000 });
    expect(deleted).toBe(2500);
    expect(await count(s.db, s.schema, 'processed_events')).toBe(300);
    expect(await pruneProcessedEvents(s.db, { schema: s.schema, olderThanMs: 7 * 24 * 3600 * 1000 })).toBe(0);
  });

  it('refuses a hostile schema', async () => {
    await expect(pruneProcessedEvents(s.db, { schema: 'a;drop', olderThanMs: 1000 })).rejects.toThrow(/safe identifier/);
  });
});
