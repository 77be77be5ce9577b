import { randomBytes } from 'node:crypto';
import { createTestSchema, readTopic, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { Registry } from 'prom-client';
import { OutboxRelay, relayPrometheusMetrics, type DrainResult } from '../src';
import { enqueue, header, idsPerKey, makeMessages, outOfOrderKeys, rows, waitFor, newTopic } from './support/outbox';

describe('poison rows', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_poison');
  });
  afterAll(async () => s.drop());

  it('a row for a missing topic backs off, then is parked after maxAttempts; an oversized row is parked at once; other keys flow (F27, F34)', async () => {
    const topic = await newTopic(kafka, 'relay_poison', 2);
    const missing = uniqueName('relay_missing'); // auto-creation is off on the test broker
    await enqueue(s.db, s.schema, makeMessages(topic, 10, 3, 'before'));
    await enqueue(s.db, s.schema, [
      { eventId: 'ghost-1', topic: missing, key: 'ghost', value: 'nobody reads this' },
      { eventId: 'big-1', topic, key: 'big', value: randomBytes(1_200_000) },
    ]);
    await enqueue(s.db, s.schema, [
      { eventId: 'ghost-2', topic, key: 'ghost', value: 'after the ghost' },
      { eventId: 'big-2', topic, key: 'big', value: 'after the big one' },
      ...makeMessages(topic, 10, 3, 'after'),
    ]);
    const registry = new Registry();
    const relay = new OutboxRelay({
      brokers,
      metrics: relayPrometheusMetrics(registry),
      db: s.db,
      databaseUrl,
      schema: s.schema,
      maxAttempts: 3,
      retryDelayMs: 20,
      maxRetryDelayMs: 50,
      producer: { retry: { retries: 1, initialRetryTime: 20, maxRetryTime: 50 } },
    });
    try {
      // First cycle: the batch fails, the fallback publishes the healthy rows one by one,
      // parks the oversized row, backs off the ghost row and holds back the rows behind both
      // (in this cycle) so each key stays in order.
      const first = await relay.drainOnce();
      expect(first).toEqual<DrainResult>({ published: 20, failed: 1, parked: 1, fetched: 24, leader: true });
      let state = await rows(s.db, s.schema);
      const byId = (id: string) => state.find((x) => x.event_id === id);
      expect(byId('big-1')).toMatchObject({ status: 'parked', attempts: 1 });
      expect(byId('big-1')?.last_error).toMatch(/too large/);
      expect(byId('ghost-1')).toMatchObject({ status: 'pending', attempts: 1 });
      expect(byId('ghost-2')).toMatchObject({ status: 'pending', attempts: 0 });
      expect(byId('big-2')).toMatchObject({ status: 'pending', attempts: 0 });
      expect(state.filter((x) => x.event_id.startsWith('before-') || x.event_id.startsWith('after-')).every((x) => x.status === 'published')).toBe(true);

      // Later cycles: the ghost row uses up its attempts and is parked; then its key flows again.
      state = await waitFor(
        async () => {
          await relay.drainOnce();
          return rows(s.db, s.schema);
        },
        (all) => all.every((x) => x.status !== 'pending'),
      );
      expect(byId('ghost-1')).toMatchObject({ status: 'parked', attempts: 3 });
      expect(byId('ghost-1')?.last_error).toMatch(/topic|partition/i);
      expect(byId('ghost-2')?.status).toBe('published');
      expect(byId('big-2')?.status).toBe('published');
      expect(relay.stats.parked).toBe(2);
      const text = await registry.metrics();
      expect(text).toContain(`effectively_relay_parked_total{schema="${s.schema}",topic="${topic}",reason="message-too-large"} 1`);
      expect(text).toContain(`effectively_relay_parked_total{schema="${s.schema}",topic="${missing}",reason="unknown-topic"} 1`);
      expect(text).toContain(`effectively_relay_failed_attempts_total{schema="${s.schema}",topic="${missing}",reason="unknown-topic"} 3`);
    } finally {
      await relay.stop();
    }
    const all = await rows(s.db, s.schema);
    const messages = await readTopic(kafka, topic);
    const published = all.filter((x) => x.status === 'published').map((x) => x.event_id);
    expect(new Set(messages.map((m) => header(m, 'event-id')))).toEqual(new Set(published));
    expect(outOfOrderKeys(idsPerKey(messages, new Map(all.map((x) => [x.event_id, x.id]))))).toEqual([]);
  });
});
