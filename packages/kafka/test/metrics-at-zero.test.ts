import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { Registry } from 'prom-client';
import { CONSUMER_METRICS, consumerPrometheusMetrics, IdempotentConsumer } from '../src';
import { waitFor } from './support/ledger';

/** The value of `name` with exactly `labels`, as a scrape shows it (`undefined`: no such series). */
async function sample(registry: Registry, name: string, labels: Record<string, string | number>): Promise<number | undefined> {
  const metric = await registry.getSingleMetricAsString(name).catch(() => '');
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = metric.split('\n').find((l) => l.startsWith(`${name}{`) && wanted.every((w) => l.includes(w)) && (l.match(/="/g) ?? []).length === wanted.length);
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('consumer metrics on a fresh registry', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('lists every family from the start and has the counters of an assigned partition at 0 before its first event', async () => {
    const s = await createTestSchema(databaseUrl, 'metrics_zero');
    try {
      const [topic] = (await createTopics(kafka, [{ prefix: 'metrics_zero', partitions: 1 }])) as [string];
      const registry = new Registry();
      const metrics = consumerPrometheusMetrics(registry);
      const scrape = await registry.metrics();
      for (const name of Object.keys(CONSUMER_METRICS)) expect(scrape).toContain(`# TYPE effectively_${name} `);

      const group = uniqueName('g');
      const consumer = new IdempotentConsumer<{ n: number }>({ client: testClient(), brokers, groupId: group, topics: [topic], db: s.db, schema: s.schema, metrics, handler: async () => {} });
      await consumer.start();
      try {
        const labels = { group, topic, partition: 0 };
        // Assigned, nothing consumed yet: every counter of the partition reads 0.
        await waitFor(() => sample(registry, 'effectively_events_processed_total', labels), (v) => v !== undefined, 60_000);
        expect(consumer.stats.processed).toBe(0);
        for (const name of ['events_processed_total', 'events_duplicate_total', 'events_conflict_total', 'fenced_total']) {
          expect(await sample(registry, `effectively_${name}`, labels)).toBe(0);
        }
        expect(await sample(registry, 'effectively_events_dead_lettered_total', { ...labels, reason: 'any' })).toBe(0);
        expect(await sample(registry, 'effectively_retries_total', { ...labels, kind: 'handler' })).toBe(0);
        expect(await sample(registry, 'effectively_retries_total', { ...labels, kind: 'transient' })).toBe(0);

        await produceMessages(kafka, topic, [{ key: 'k', value: JSON.stringify({ n: 1 }), headers: { 'event-id': 'first' } }]);
        expect(await waitFor(() => sample(registry, 'effectively_events_processed_total', labels), (v) => v === 1, 60_000)).toBe(1);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });

  it('two consumers can share one registry', () => {
    const registry = new Registry();
    const a = consumerPrometheusMetrics(registry);
    const b = consumerPrometheusMetrics(registry);
    a.increment('events_processed_total', { group: 'g', topic: 't', partition: 0 });
    b.increment('events_processed_total', { group: 'g', topic: 't', partition: 1 });
    expect(registry.getMetricsAsArray().filter((m) => m.name === 'effectively_events_processed_total')).toHaveLength(1);
  });
});
