import { createOutbox } from '@effectively/core';
import { createTestSchema, testClient, testServices, uniqueName } from '@effectively/testkit';
import { Registry } from 'prom-client';
import { OutboxRelay, relayPrometheusMetrics } from '../src';
import { waitFor } from './support/outbox';

describe(`relay_send_errors_total (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const client = testClient();

  it('counts failed sends by kind: a row for a topic that does not exist fails the batch, then its own send', async () => {
    const s = await createTestSchema(databaseUrl, 'relay_send_err');
    const registry = new Registry();
    const relay = new OutboxRelay({ client, brokers, db: s.db, databaseUrl, schema: s.schema, pollIntervalMs: 50, maxAttempts: 2, retryDelayMs: 20, metrics: relayPrometheusMetrics(registry) });
    try {
      await createOutbox({ schema: s.schema }).publish(s.db, { topic: uniqueName('relay_missing'), key: 'k', value: 'v' });
      await relay.start();
      const errors = async (): Promise<Record<string, number>> =>
        Object.fromEntries(((await registry.getSingleMetric('effectively_relay_send_errors_total')?.get())?.values ?? []).map((v) => [String(v.labels.kind), v.value]));
      const seen = await waitFor(errors, (e) => (e['unknown-topic'] ?? 0) >= 2, 60_000, 'two unknown-topic send errors');
      // Every kind's series exists from the start (at 0); only unknown-topic was counted.
      expect(Object.keys(seen).sort()).toEqual(['invalid-record', 'message-too-large', 'not-authorized', 'retriable', 'unavailable', 'unknown-topic']);
      expect(Object.entries(seen).filter(([, n]) => n > 0).map(([kind]) => kind)).toEqual(['unknown-topic']);
      await waitFor(() => relay.stats.parked, (n) => n === 1, 60_000, 'the row parked');
    } finally {
      await relay.stop();
      await s.drop();
    }
  });
});
