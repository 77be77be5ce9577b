/**
 * `@opentelemetry/api` installed (and a context manager registered) but no tracer provider: the
 * relay and the consumer behave exactly as without OpenTelemetry. Records carry the rows' own
 * headers, rows written by handlers carry the incoming record's trace context unchanged.
 */
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { createOutbox, runWithTraceContext } from '@effectively/core';
import { IdempotentConsumer } from '@effectively/kafka';
import { createTestSchema, readTopic, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { OutboxRelay } from '../src';
import { newTopic, waitFor } from './support/outbox';

describe('OpenTelemetry without a tracer provider', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    s = await createTestSchema(databaseUrl, 'otel_off');
  });
  afterAll(async () => {
    await s.drop();
    context.disable();
  });

  it('relayed records carry exactly the rows’ headers; handlers’ rows carry the incoming trace context', async () => {
    expect(trace.getActiveSpan()).toBeUndefined();
    const topic = await newTopic(kafka, 'otel_off');
    const traced = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'vendor=1' };
    const outbox = createOutbox({ schema: s.schema });
    await s.db.transaction().execute((trx) =>
      runWithTraceContext(traced, () =>
        outbox.publish(trx, [
          { topic, key: 'a', eventId: 'off-1', value: { n: 1 }, headers: { custom: 'x' } },
          { topic, key: 'b', eventId: 'off-2', value: '"plain"' },
        ]),
      ),
    );
    await outbox.publish(s.db, { topic, key: 'c', eventId: 'off-3', value: Buffer.from('[1,2,3]') });
    const { rows } = await sql<{ event_id: string; headers: Record<string, string> }>`SELECT event_id, headers FROM ${sql.id(s.schema, 'outbox')} ORDER BY id`.execute(s.db);
    const stored = new Map(rows.map((r) => [r.event_id, r.headers]));
    expect(stored.get('off-1')).toEqual({ custom: 'x', 'content-type': 'application/json', ...traced });
    expect(stored.get('off-3')).toEqual({});

    const relay = new OutboxRelay({ brokers, db: s.db, databaseUrl, schema: s.schema, pollIntervalMs: 50 });
    await relay.start();
    try {
      await waitFor(() => relay.stats.published, (n) => n >= 3, 60_000, 'three rows relayed');
    } finally {
      await relay.stop();
    }
    const records = await readTopic(kafka, topic);
    expect(records.map((r) => Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, String(v)])))).toEqual(
      ['off-1', 'off-2', 'off-3'].map((id) => ({ ...stored.get(id), 'event-id': id })),
    );

    const derived = await newTopic(kafka, 'otel_off_derived');
    const consumer = new IdempotentConsumer<unknown>({
      brokers, groupId: uniqueName('otel_off'), topics: [topic], db: s.db, schema: s.schema,
      handler: async (event, { trx, outbox: out }) => {
        await out.publish(trx, { topic: derived, key: String(event.key), eventId: `d:${event.id}`, value: 'x' });
      },
    });
    await consumer.start();
    try {
      await waitFor(() => consumer.stats.processed, (n) => n >= 3, 60_000, 'three events');
    } finally {
      await consumer.stop();
    }
    const after = await sql<{ event_id: string; headers: Record<string, string> }>`SELECT event_id, headers FROM ${sql.id(s.schema, 'outbox')} ORDER BY id`.execute(s.db);
    const byId = new Map(after.rows.map((r) => [r.event_id, r.headers]));
    expect(byId.get('d:off-1')).toEqual(traced);
    expect(byId.get('d:off-2')).toEqual(traced);
    expect(byId.get('d:off-3')).toEqual({});
  });
});
