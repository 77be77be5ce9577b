/**
 * The consumer's `process` spans end with the transaction's outcome: committed, rolled back
 * (a failed handler retried later, a failing hook), fenced; handler failures, dead letters and
 * retries are recorded on them. In-memory exporter, real broker and Postgres.
 */
import { context, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { IdempotentConsumer } from '../src';
import { waitFor } from './support/ledger';

const exporter = new InMemorySpanExporter();

describe('process span outcomes', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  beforeAll(async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
    s = await createTestSchema(databaseUrl, 'otel_outcomes');
  });
  afterAll(async () => {
    await s.drop();
    trace.disable();
    context.disable();
  });

  it('committed, rolled back (handler failure, failing hook) and fenced, with handler failures and dead letters as events', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'otel_outcomes', partitions: 1 }])) as [string];
    await produceMessages(kafka, topic, [
      { key: 'a', value: JSON.stringify({ fail: 1 }), headers: { 'event-id': 'flaky' } },
      { key: 'b', value: JSON.stringify({ fail: 99 }), headers: { 'event-id': 'poison' } },
      { key: 'c', value: JSON.stringify({ fail: 0 }), headers: { 'event-id': 'hooked' } },
    ]);
    const failures = new Map<string, number>();
    let hookFailed = false;
    const group = uniqueName('otel_outcomes');
    const consumer = new IdempotentConsumer<{ fail: number }>({ client: testClient(),
      brokers, groupId: group, topics: [topic], db: s.db, schema: s.schema, mode: 'event', maxAttempts: 2, retryDelayMs: 10,
      handler: async (event) => {
        const n = failures.get(event.id) ?? 0;
        if (n < event.value.fail) {
          failures.set(event.id, n + 1);
          throw new Error(`failing ${event.id}`);
        }
      },
      hooks: {
        beforeDbCommit: (ctx) => {
          if (ctx.claimed.includes('hooked') && !hookFailed) {
            hookFailed = true;
            throw new Error('hook refused the commit');
          }
        },
      },
    });
    const spans = (): ReadableSpan[] => exporter.getFinishedSpans().filter((x) => x.name === `process ${topic}`);
    const of = (id: string): ReadableSpan[] => spans().filter((x) => x.attributes['messaging.message.id'] === id);
    await consumer.start();
    try {
      await waitFor(async () => consumer.stats.processed + consumer.stats.deadLettered, (n) => n >= 3, 60_000);
      // Another member takes the partition over (its epoch bump); this member's next transaction is fenced.
      await sql`UPDATE ${sql.id(s.schema, 'partition_fences')} SET epoch = epoch + 1 WHERE consumer_group = ${group}`.execute(s.db);
      await produceMessages(kafka, topic, [{ key: 'd', value: JSON.stringify({ fail: 0 }), headers: { 'event-id': 'late' } }]);
      await waitFor(async () => of('late').length, (n) => n >= 1, 60_000);
    } finally {
      await consumer.stop();
    }
    const outcome = (x: ReadableSpan): unknown => x.attributes['effectively.outcome'];
    const events = (x: ReadableSpan): string[] => x.events.map((e) => e.name);

    const [flakyFailed, flakyDone] = of('flaky');
    expect(outcome(flakyFailed as ReadableSpan)).toBe('rolled_back');
    expect(flakyFailed?.status.code).toBe(SpanStatusCode.ERROR);
    expect(events(flakyFailed as ReadableSpan)).toEqual(['exception', 'handler failed']);
    expect(flakyFailed?.attributes['effectively.retry']).toBe(true);
    expect(outcome(flakyDone as ReadableSpan)).toBe('committed');
    expect(flakyDone?.status.code).not.toBe(SpanStatusCode.ERROR);

    const poison = of('poison');
    expect(poison.map(outcome)).toEqual(['rolled_back', 'committed']);
    expect(events(poison[1] as ReadableSpan)).toEqual(['exception', 'handler failed', 'dead-lettered']);
    expect(poison[1]?.attributes['effectively.dead_lettered']).toBe(1);

    const hooked = of('hooked');
    expect(hooked.map(outcome)).toEqual(['rolled_back', 'committed']);
    expect(hooked[0]?.status).toMatchObject({ code: SpanStatusCode.ERROR, message: 'hook refused the commit' });

    expect(outcome(of('late')[0] as ReadableSpan)).toBe('fenced');
    expect(of('late')[0]?.status.code).toBe(SpanStatusCode.ERROR);
  });
});
