import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { apply, count, createLedger, totals, waitFor, type Entry } from './support/ledger';

// A topic deleted and created again starts its offsets at 0 again, and a group reset to the
// earliest offset reads them. The attempt records a consumer keeps per offset must not describe
// those new events: a run a consumer recorded (the rest of a fetched batch in per-event mode, a
// chunk's handlers in batch mode) is cleared once its events have all committed. Left in place,
// the new events at its offsets were taken for an unfinished run's: each handled alone in its
// transaction, starting at attempt 2.
describe(`a topic deleted and created again (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const entry = (id: string, amount: number) => ({ key: 'k', value: JSON.stringify({ account: 'a', amount }), headers: { 'event-id': id } });

  /**
   * Deletes `topic` and creates it again. Deletion completes in the background, and a create
   * may succeed on the broker yet fail (or time out) at the client: whatever createTopics
   * answered, the topic counts as created again once its partitions have leaders and it is
   * empty (the old topic held messages, so it is never taken for the new one).
   */
  async function recreate(topic: string): Promise<void> {
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.deleteTopics({ topics: [topic], timeout: 30_000 });
      const deadline = Date.now() + 90_000;
      for (;;) {
        await admin.createTopics({ waitForLeaders: false, topics: [{ topic, numPartitions: 1, replicationFactor: 1 }] }).catch(() => false);
        const led = await admin
          .fetchTopicMetadata({ topics: [topic] })
          .then((m) => (m.topics[0]?.partitions.length ?? 0) > 0 && m.topics[0]?.partitions.every((p) => p.leader >= 0) === true)
          .catch(() => false);
        const empty = led && (await admin.fetchTopicOffsets(topic).then((o) => o.length > 0 && o.every((p) => p.high === '0')).catch(() => false));
        if (empty) return;
        if (Date.now() > deadline) throw new Error(`${topic} could not be created again within 90 s`);
        await new Promise((r) => setTimeout(r, 250));
      }
    } finally {
      await admin.disconnect();
    }
  }

  it.each(['event', 'batch'] as const)('first consumed in per-event mode, then in %s mode from offset 0 again: new events run as attempt 1, in batches in batch mode', async (second) => {
    const s = await createTestSchema(databaseUrl, `recreated_${second}`);
    try {
      await createLedger(s.db, s.schema);
      const [topic] = await createTopics(kafka, [{ prefix: `recreated_${second}`, partitions: 1 }]);
      const groupId = uniqueName('g');
      const n = 40;
      const consume = async (mode: 'event' | 'batch', expected: number, attempts: Map<string, number>) => {
        const consumer = new IdempotentConsumer<Entry>({
          client: testClient(),
          brokers,
          groupId,
          topics: [topic as string],
          db: s.db,
          schema: s.schema,
          mode,
          handler: async (event, ctx) => {
            attempts.set(event.id, ctx.attempt);
            await apply(ctx.trx, s.schema, event.value);
          },
        });
        await consumer.start();
        try {
          await waitFor(async () => consumer.stats.processed, (p) => p >= expected, 60_000);
        } finally {
          await consumer.stop();
        }
        return consumer.stats;
      };

      await produceMessages(kafka, topic as string, Array.from({ length: n }, (_, i) => entry(`old-${i}`, 1)));
      await consume('event', n, new Map());

      await recreate(topic as string);
      const admin = kafka.admin();
      await admin.connect();
      await admin.resetOffsets({ groupId, topic: topic as string, earliest: true });
      await admin.disconnect();
      await produceMessages(kafka, topic as string, Array.from({ length: n }, (_, i) => entry(`new-${i}`, 2)));

      const attempts = new Map<string, number>();
      const stats = await consume(second, n, attempts);
      expect(attempts.size).toBe(n);
      expect([...attempts.values()].filter((a) => a !== 1)).toEqual([]);
      // Batch mode: a few chunks, not one transaction per event.
      if (second === 'batch') expect(stats.batches).toBeLessThan(n / 4);
      expect(await totals(s.db, s.schema)).toEqual({ a: { total: n * 3, applied: n * 2 } });
      expect(await count(s.db, s.schema, 'processed_events')).toBe(n * 2);
    } finally {
      await s.drop();
    }
  }, 180_000);
});
