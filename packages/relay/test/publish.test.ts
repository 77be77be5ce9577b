import { createOutbox, InvalidConfigError, InvalidIdentifierError } from '@effectively/core';
import { createTestSchema, readTopic, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { Registry } from 'prom-client';
import { OutboxRelay, pruneOutbox, relayPrometheusMetrics, type OutboxRelayOptions } from '../src';
import { countByStatus, enqueue, header, idsPerKey, makeMessages, outOfOrderKeys, rows, waitFor, newTopic } from './support/outbox';

describe('outbox relay publishes committed rows', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_pub');
  });
  afterAll(async () => s.drop());

  const relay = (extra: Partial<OutboxRelayOptions> = {}): OutboxRelay =>
    new OutboxRelay({ brokers, db: s.db, databaseUrl, schema: s.schema, pollIntervalMs: 50, ...extra });

  it('rejects unsafe configuration up front (F22: idempotent producer with several requests in flight)', () => {
    expect(() => relay({ producer: { idempotent: true, maxInFlightRequests: 5 } })).toThrow(InvalidConfigError);
    expect(() => relay({ producer: { maxInFlightRequests: 2 } })).toThrow(/maxInFlightRequests must be 1/);
    expect(() => relay({ producer: { idempotent: false } })).toThrow(/idempotent cannot be false/);
    expect(() => relay({ producer: { transactionalId: 'x' } as never })).toThrow(InvalidConfigError);
    expect(() => relay({ schema: 'x"; DROP TABLE y; --' })).toThrow(InvalidIdentifierError);
    expect(() => relay({ databaseUrl: undefined })).toThrow(/databaseUrl is required/);
    expect(() => relay({ batchSize: 0 })).toThrow(/batchSize/);
    const options: OutboxRelayOptions = { brokers, db: s.db, databaseUrl, schema: s.schema, producer: { retry: { retries: 2 } } };
    const copy = JSON.stringify({ ...options, db: undefined });
    new OutboxRelay(options);
    expect(JSON.stringify({ ...options, db: undefined })).toBe(copy);
  });

  it('publishes every committed row once, in id order per key, with the event-id header; rows end published', async () => {
    const topic = await newTopic(kafka, 'relay_order', 3);
    const r = relay({ batchSize: 100 });
    await r.start();
    try {
      // Five writers, each owning its own keys, each committing 6 transactions of 20 rows while the relay runs.
      await Promise.all(
        Array.from({ length: 5 }, async (_, w) => {
          for (let t = 0; t < 6; t++) await enqueue(s.db, s.schema, makeMessages(topic, 20, 4, `w${w}`, t * 20));
        }),
      );
      // A few rows without a key.
      await enqueue(s.db, s.schema, [{ eventId: 'nokey-1', topic, value: 'a' }, { eventId: 'nokey-2', topic, key: null, value: null }]);
      const total = 5 * 6 * 20 + 2;
      await waitFor(() => countByStatus(s.db, s.schema), (c) => c.published === total);
      const all = await rows(s.db, s.schema);
      expect(all.filter((x) => x.topic === topic).every((x) => x.status === 'published')).toBe(true);

      const messages = await readTopic(kafka, topic);
      const idOf = new Map(all.map((x) => [x.event_id, x.id]));
      const eventIds = messages.map((m) => header(m, 'event-id'));
      expect(eventIds.every((id) => id !== undefined)).toBe(true);
      expect(new Set(eventIds).size).toBe(total);
      expect(messages.length).toBe(total);
      const perKey = idsPerKey(messages, idOf);
      expect(perKey.size).toBe(5 * 4 + 1);
      expect(outOfOrderKeys(perKey)).toEqual([]);
      // Stored headers travel along; values and tombstones arrive as written.
      const m7 = messages.find((m) => header(m, 'event-id') === 'w3-7');
      expect(header(m7 as never, 'seq')).toBe('7');
      expect(JSON.parse(String(m7?.value))).toEqual({ i: 7, prefix: 'w3' });
      expect(messages.find((m) => header(m, 'event-id') === 'nokey-2')?.value).toBeNull();
      expect(r.stats.published).toBe(total);
      expect(r.stats.isLeader).toBe(true);
    } finally {
      await r.stop();
    }
    expect(r.stats.isLeader).toBe(false);
  });

  it('never publishes the rows of a rolled-back transaction', async () => {
    const topic = await newTopic(kafka, 'relay_rollback');
    const writer = createOutbox({ schema: s.schema });
    const r = relay();
    await r.start();
    try {
      await expect(
        s.db.transaction().execute(async (trx) => {
          await writer.publish(trx, makeMessages(topic, 10, 2, 'rb'));
          throw new Error('handler failed');
        }),
      ).rejects.toThrow('handler failed');
      await enqueue(s.db, s.schema, makeMessages(topic, 10, 2, 'ok'));
      await waitFor(() => rows(s.db, s.schema), (all) => all.filter((x) => x.topic === topic && x.status === 'published').length === 10);
    } finally {
      await r.stop();
    }
    const messages = await readTopic(kafka, topic);
    const ids = messages.map((m) => header(m, 'event-id') ?? '');
    expect(ids.filter((id) => id.startsWith('rb-'))).toEqual([]);
    expect(new Set(ids)).toEqual(new Set(makeMessages(topic, 10, 2, 'ok').map((m) => m.eventId)));
    expect((await rows(s.db, s.schema)).filter((x) => x.event_id.startsWith('rb-'))).toEqual([]);
  });

  it('publishes a row whose transaction took a lower id but committed later (F30: no id watermark)', async () => {
    const topic = await newTopic(kafka, 'relay_late');
    const writer = createOutbox({ schema: s.schema });
    const r = relay();
    await r.start();
    try {
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let inserted!: () => void;
      const insertedA = new Promise<void>((resolve) => (inserted = resolve));
      const txA = s.db.transaction().execute(async (trx) => {
        await writer.publish(trx, [{ eventId: 'late-a', topic, key: 'a', value: 'A' }]);
        inserted();
        await gate;
      });
      await insertedA;
      await enqueue(s.db, s.schema, [{ eventId: 'late-b', topic, key: 'b', value: 'B' }]);
      const afterB = await waitFor(() => rows(s.db, s.schema), (all) => all.some((x) => x.event_id === 'late-b' && x.status === 'published'));
      expect(afterB.some((x) => x.event_id === 'late-a')).toBe(false); // not committed yet, invisible
      release();
      await txA;
      const all = await waitFor(() => rows(s.db, s.schema), (x) => x.some((row) => row.event_id === 'late-a' && row.status === 'published'));
      const a = all.find((x) => x.event_id === 'late-a');
      const b = all.find((x) => x.event_id === 'late-b');
      expect(BigInt(a?.id ?? 0)).toBeLessThan(BigInt(b?.id ?? 0));
    } finally {
      await r.stop();
    }
    const ids = (await readTopic(kafka, topic)).map((m) => header(m, 'event-id'));
    expect(ids).toEqual(['late-b', 'late-a']);
  });

  it('drainOnce runs one cycle and reports what it did', async () => {
    const topic = await newTopic(kafka, 'relay_drain');
    const registry = new Registry();
    const r = relay({ batchSize: 7, metrics: relayPrometheusMetrics(registry) });
    try {
      await enqueue(s.db, s.schema, makeMessages(topic, 10, 3, 'dr'));
      expect(await r.drainOnce()).toEqual({ published: 7, failed: 0, parked: 0, fetched: 7, leader: true });
      expect(await r.drainOnce()).toEqual({ published: 3, failed: 0, parked: 0, fetched: 3, leader: true });
      expect(await r.drainOnce()).toEqual({ published: 0, failed: 0, parked: 0, fetched: 0, leader: true });
      const text = await registry.metrics();
      expect(text).toContain(`effectively_relay_published_total{schema="${s.schema}",topic="${topic}"} 10`);
      expect(text).toContain(`effectively_relay_leader{schema="${s.schema}"} 1`);
      expect(text).toContain('effectively_relay_lag_seconds');
      expect(text).toContain('effectively_relay_batch_duration_seconds_count');
    } finally {
      await r.stop();
    }
    expect(await registry.metrics()).toContain(`effectively_relay_leader{schema="${s.schema}"} 0`);
    await expect(r.drainOnce()).rejects.toThrow(/stopped/);
  });
});

describe('pruneOutbox', () => {
  const { databaseUrl } = testServices();
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_prune');
  });
  afterAll(async () => s.drop());

  it('deletes only published rows older than the window, in batches', async () => {
    const outbox = sql.id(s.schema, 'outbox');
    const insert = (prefix: string, n: number, status: string, publishedAgo: string | null) =>
      sql`
        INSERT INTO ${outbox} (event_id, topic, status, created_at, published_at)
        SELECT ${prefix} || '-' || g, 't', ${status}, now() - interval '3 days',
               CASE WHEN ${publishedAgo}::interval IS NULL THEN NULL ELSE now() - ${publishedAgo}::interval END
        FROM generate_series(1, ${n}) g`.execute(s.db);
    await insert('old-published', 25, 'published', '2 hours');
    await insert('new-published', 5, 'published', '1 minute');
    await insert('old-pending', 4, 'pending', null);
    await insert('old-parked', 3, 'parked', null);
    await expect(pruneOutbox(s.db, { schema: s.schema, olderThanMs: -1 })).rejects.toThrow(InvalidConfigError);
    expect(await pruneOutbox(s.db, { schema: s.schema, olderThanMs: 60 * 60 * 1000, batchSize: 4 })).toEqual({ deleted: 25 });
    expect(await countByStatus(s.db, s.schema)).toEqual({ published: 5, pending: 4, parked: 3 });
    expect(await pruneOutbox(s.db, { schema: s.schema, olderThanMs: 60 * 60 * 1000 })).toEqual({ deleted: 0 });
  });
});
