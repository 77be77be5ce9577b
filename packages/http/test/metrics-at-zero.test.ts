import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { PrometheusMetrics } from '@effectively/core';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, IDEMPOTENCY_METRICS } from '../src';

/** The value of `name` with exactly `labels`, as a scrape shows it (`undefined`: no such series). */
async function sample(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const text = await registry.getSingleMetricAsString(name).catch(() => '');
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const prefix = wanted.length === 0 ? `${name} ` : `${name}{`;
  const line = text.split('\n').find((l) => l.startsWith(prefix) && wanted.every((w) => l.includes(w)) && (l.match(/="/g) ?? []).length === wanted.length);
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('idempotency metrics on a fresh registry', () => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, 'http_metrics_zero');
  });
  afterAll(() => ts?.drop());

  it('lists every family at creation (pruned at 0), and a route\'s counters at 0 from its first request', async () => {
    const registry = new Registry();
    const idempotency = createIdempotency({ db: ts.db, schema: ts.schema, metrics: new PrometheusMetrics(registry, IDEMPOTENCY_METRICS) });
    const scrape = await registry.metrics();
    for (const name of Object.keys(IDEMPOTENCY_METRICS)) expect(scrape).toContain(`# TYPE effectively_${name} `);
    expect(await sample(registry, 'effectively_idempotency_pruned_total', {})).toBe(0);

    const result = await idempotency.handle({ method: 'POST', route: '/orders', scope: 't', idempotencyKey: randomUUID(), body: {} }, async () => ({ status: 201, json: {} }));
    expect(result.outcome).toBe('executed');
    const route = { route: '/orders' };
    expect(await sample(registry, 'effectively_idempotency_claims_total', route)).toBe(1);
    for (const name of ['replays', 'conflicts', 'mismatches', 'takeovers', 'released', 'lease_lost', 'rejected_keys']) {
      expect(await sample(registry, `effectively_idempotency_${name}_total`, route)).toBe(0);
    }
  });
});
