import { createTestSchema, testKafka, testServices } from '@effectively/testkit';
import { Registry } from 'prom-client';
import { OutboxRelay, RELAY_METRICS, relayPrometheusMetrics } from '../src';
import { enqueue, makeMessages, newTopic, waitFor } from './support/outbox';

/** The value of `name` with exactly `labels`, as a scrape shows it (`undefined`: no such series). */
async function sample(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const text = await registry.getSingleMetricAsString(name).catch(() => '');
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && wanted.every((w) => l.includes(w)) && (l.match(/="/g) ?? []).length === wanted.length);
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('relay metrics on a fresh registry', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('lists every family and has its per-schema counters at 0 from construction, and a topic\'s failure counters at 0 from its first claim', async () => {
    const s = await createTestSchema(databaseUrl, 'relay_metrics_zero');
    const registry = new Registry();
    const relay = new OutboxRelay({ brokers, db: s.db, listen: false, schema: s.schema, pollIntervalMs: 50, metrics: relayPrometheusMetrics(registry) });
    try {
      const scrape = await registry.metrics();
      for (const name of Object.keys(RELAY_METRICS)) expect(scrape).toContain(`# TYPE effectively_${name} `);
      const schema = { schema: s.schema };
      expect(await sample(registry, 'effectively_relay_cycle_errors_total', schema)).toBe(0);
      for (const kind of ['unknown-topic', 'not-authorized', 'message-too-large', 'invalid-record', 'unavailable', 'retriable']) {
        expect(await sample(registry, 'effectively_relay_send_errors_total', { ...schema, kind })).toBe(0);
      }

      const topic = await newTopic(kafka, 'relay_metrics_zero');
      await enqueue(s.db, s.schema, makeMessages(topic, 3, 2, 'm'));
      await relay.start();
      const published = { ...schema, topic };
      expect(await waitFor(() => sample(registry, 'effectively_relay_published_total', published), (v) => v === 3, 60_000, 'three rows published')).toBe(3);
      for (const reason of ['unknown-topic', 'not-authorized', 'message-too-large', 'invalid-record', 'retriable']) {
        expect(await sample(registry, 'effectively_relay_failed_attempts_total', { ...published, reason })).toBe(0);
        expect(await sample(registry, 'effectively_relay_parked_total', { ...published, reason })).toBe(0);
      }
    } finally {
      await relay.stop();
      await s.drop();
    }
  });
});
