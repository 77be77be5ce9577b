import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { Registry } from 'prom-client';
import { consumerPrometheusMetrics, IdempotentConsumer } from '../src';
import { waitFor } from './support/ledger';

/** The value of `effectively_<name>` with exactly these labels, if reported. */
async function gauge(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = registry.getSingleMetric(`effectively_${name}`);
  if (metric === undefined) return undefined;
  const { values } = await metric.get();
  return values.find((v) => Object.entries(labels).every(([k, x]) => String(v.labels[k]) === x))?.value;
}

describe('metrics the alerts need', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('consumer lag per partition as the member sees it, the topic retention and the oldest dedup record age', async () => {
    const s = await createTestSchema(databaseUrl, 'ops_metrics');
    try {
      const [topic] = (await createTopics(kafka, [{ prefix: 'ops_metrics', partitions: 1, config: { 'retention.ms': '7200000' } }])) as [string];
      await produceMessages(kafka, topic, Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, value: JSON.stringify({ i }), headers: { 'event-id': `e-${i}` } })));
      const registry = new Registry();
      const group = uniqueName('ops');
      const lagAfterChunk: Array<number | undefined> = [];
      const labels = { group, topic, partition: '0' };
      const consumer = new IdempotentConsumer({ client: testClient(),
        brokers, groupId: group, topics: [topic], db: s.db, schema: s.schema, mode: 'event',
        metrics: consumerPrometheusMetrics(registry),
        handler: async () => {},
        hooks: {
          afterDbCommit: async () => {
            lagAfterChunk.push(await gauge(registry, 'consumer_lag_messages', labels));
          },
        },
      });
      await consumer.start();
      try {
        await waitFor(async () => consumer.stats.processed, (n) => n >= 10, 60_000);
        await waitFor(() => gauge(registry, 'consumer_topic_retention_seconds', { group, topic }), (v) => v !== undefined, 30_000);
        await waitFor(() => gauge(registry, 'dedup_oldest_record_age_seconds', { group }), (v) => v !== undefined, 30_000);
      } finally {
        await consumer.stop();
      }
      // All ten were fetched at once (high watermark 10) or in several fetches: the lag after each
      // event is the high watermark of its fetch minus the offset after it, down to 0 at the end.
      expect(lagAfterChunk).toHaveLength(10);
      expect(lagAfterChunk[9]).toBe(0);
      expect(lagAfterChunk.every((v) => v !== undefined && v >= 0 && v <= 9)).toBe(true);
      expect(await gauge(registry, 'consumer_lag_messages', labels)).toBe(0);
      expect(await gauge(registry, 'consumer_topic_retention_seconds', { group, topic })).toBe(7200);
      expect(await gauge(registry, 'dedup_oldest_record_age_seconds', { group })).toBeGreaterThanOrEqual(0);
    } finally {
      await s.drop();
    }
  });
});
