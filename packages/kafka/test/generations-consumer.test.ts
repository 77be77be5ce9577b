import { sql } from 'kysely';
import { Registry } from 'prom-client';
import { createDatabase } from '@effectively/core';
import { createTestSchema, createTopics, produceMessages, seededRandom, testKafka, testServices, uniqueName } from '@effectively/testkit';
import { consumerPrometheusMetrics, enableGenerations, IdempotentConsumer, readGenerations, rotateProcessedEvents } from '../src';
import { count, createLedger, handler, makeEvents, model, sameTotals, toMessages, totals, waitFor } from './support/ledger';

async function gauge(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = registry.getSingleMetric(`effectively_${name}`);
  if (metric === undefined) return undefined;
  const { values } = await metric.get();
  return values.find((v) => Object.entries(labels).every(([k, x]) => String(v.labels[k]) === x))?.value;
}

// The idempotent consumer on a schema whose dedup retention is by generations, rotating every
// 500 ms from inside the consumer and, at the same time, from another connection pool (another
// process would do the same): copies of events sent after several rotations are still skipped.
describe('idempotent consumer with retention by generations', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it.each([
    ['batch mode', { mode: 'batch' as const, batchSize: 20 }],
    ['per-event mode', { mode: 'event' as const }],
  ])('%s: copies arriving across rotations are skipped; metrics report the generations', async (_name, options) => {
    const s = await createTestSchema(databaseUrl, 'gencons');
    const other = createDatabase({ connectionString: databaseUrl, max: 1, applicationName: 'effectively-test-rotator' });
    let rotating = true;
    let outside: Promise<void> = Promise.resolve();
    const rotations: number[] = [];
    try {
      await createLedger(s.db, s.schema);
      await enableGenerations(s.db, { schema: s.schema, windowMs: 20_000, intervalMs: 500 });
      const [topic] = (await createTopics(kafka, [{ prefix: 'gencons', partitions: 2 }])) as [string];
      const random = seededRandom(13);
      const events = makeEvents(options.mode === 'event' ? 60 : 200, random);
      const registry = new Registry();
      const group = uniqueName('g');
      const consumer = new IdempotentConsumer({ brokers, groupId: group, topics: [topic], db: s.db, schema: s.schema, handler: handler(s.schema), partitionsConsumedConcurrently: 2, metrics: consumerPrometheusMetrics(registry), ...options });
      outside = (async () => {
        while (rotating) {
          const r = await rotateProcessedEvents(other.db, { schema: s.schema });
          if (r.rotated) rotations.push(r.currentGeneration);
          await new Promise((res) => setTimeout(res, 100));
        }
      })();
      await consumer.start();
      try {
        // Three waves, each after at least two rotations; waves 2 and 3 repeat ids of the earlier ones.
        const waves = [events.slice(0, events.length / 2), [...events.slice(events.length / 2), ...events.slice(0, events.length / 4)], events.filter(() => random() < 0.5)];
        let sent = 0;
        for (const wave of waves) {
          const generation = (await readGenerations(s.db, { schema: s.schema })).currentGeneration ?? 0;
          await waitFor(async () => (await readGenerations(s.db, { schema: s.schema })).currentGeneration ?? 0, (g) => g >= generation + 2, 30_000);
          await produceMessages(kafka, topic, toMessages(wave));
          sent += wave.length;
          await waitFor(async () => consumer.stats.processed + consumer.stats.duplicates, (n) => n >= sent, 60_000);
        }
        const expected = model(events);
        expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 30_000)).toEqual(expected);
        expect(consumer.stats.processed).toBe(events.length);
        expect(await count(s.db, s.schema, 'processed_event_generations')).toBe(events.length);
        expect(await count(s.db, s.schema, 'processed_events')).toBe(0);
        const state = await readGenerations(s.db, { schema: s.schema });
        expect(state.live.length).toBeGreaterThan(4);
        // The records are spread over generations (waves 1 and 2 bring new ids, at least two switches apart).
        const { rows } = await sql<{ n: number }>`SELECT count(DISTINCT slot)::int AS n FROM ${sql.id(s.schema, 'processed_event_generations')}`.execute(s.db);
        expect(rows[0]?.n).toBeGreaterThanOrEqual(2);
        await waitFor(() => gauge(registry, 'dedup_live_generations', { group }), (v) => v !== undefined && v > 4, 10_000);
        expect(await gauge(registry, 'dedup_last_rotation_timestamp_seconds', { group })).toBeGreaterThan(Date.now() / 1000 - 60);
        // The consumer checked (and may have rotated), and so did the loop outside; between them one switch per interval.
        const checks = (await registry.getSingleMetric('effectively_dedup_rotations_total')?.get())?.values ?? [];
        const byResult = (result: string): number => checks.find((v) => v.labels['result'] === result)?.value ?? 0;
        expect(byResult('rotated') + byResult('not_due')).toBeGreaterThan(0);
        expect(byResult('failed')).toBe(0);
        expect(rotations.length + byResult('rotated')).toBeGreaterThanOrEqual(4);
      } finally {
        await consumer.stop();
      }
    } finally {
      rotating = false;
      await outside;
      await other.destroy();
      await s.drop();
    }
  });

  it('a consumer running on processed_events follows when generations are enabled, and copies of earlier events stay skipped', async () => {
    const s = await createTestSchema(databaseUrl, 'genswitch');
    try {
      await createLedger(s.db, s.schema);
      const [topic] = (await createTopics(kafka, [{ prefix: 'genswitch', partitions: 1 }])) as [string];
      const events = makeEvents(80, seededRandom(5));
      const consumer = new IdempotentConsumer({ brokers, groupId: uniqueName('g'), topics: [topic], db: s.db, schema: s.schema, handler: handler(s.schema), mode: 'batch', batchSize: 10 });
      await consumer.start();
      try {
        await produceMessages(kafka, topic, toMessages(events.slice(0, 40)));
        await waitFor(async () => consumer.stats.processed, (n) => n >= 40, 60_000);
        expect(await count(s.db, s.schema, 'processed_events')).toBe(40);
        await enableGenerations(s.db, { schema: s.schema, windowMs: 60_000, intervalMs: 30_000 });
        // Copies of the first 40 (recorded in processed_events) and 40 new ones.
        await produceMessages(kafka, topic, toMessages([...events.slice(0, 40), ...events.slice(40)]));
        await waitFor(async () => consumer.stats.processed + consumer.stats.duplicates, (n) => n >= 120, 60_000);
        const expected = model(events);
        expect(await waitFor(() => totals(s.db, s.schema), (t) => sameTotals(t, expected), 30_000)).toEqual(expected);
        expect(consumer.stats.processed).toBe(80);
        expect(await count(s.db, s.schema, 'processed_events')).toBe(40);
        expect(await count(s.db, s.schema, 'processed_event_generations')).toBe(40);
      } finally {
        await consumer.stop();
      }
    } finally {
      await s.drop();
    }
  });
});
