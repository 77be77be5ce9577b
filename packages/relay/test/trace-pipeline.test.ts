/**
 * One trace from an HTTP POST through the outbox, the relay and Kafka into an idempotent
 * consumer (and on through the consumer's own outbox rows), recorded with the OpenTelemetry SDK's
 * in-memory exporter against the real broker and Postgres.
 */
import { context, SpanKind, SpanStatusCode, trace, type Span, type SpanContext } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import express, { type NextFunction, type Request, type Response } from 'express';
import { createOutbox } from '@effectively/core';
import { createIdempotency, idempotentExpress, keepRawBody } from '@effectively/http';
import { IdempotentConsumer } from '@effectively/kafka';
import { createTestSchema, produceMessages, readTopic, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import type { Server } from 'node:http';
import { OutboxRelay } from '../src';
import { header, newTopic, waitFor } from './support/outbox';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const contextManager = new AsyncLocalStorageContextManager().enable();

const spans = (): ReadableSpan[] => exporter.getFinishedSpans();
const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;
const traceparentOf = (c: SpanContext): string => `00-${c.traceId}-${c.spanId}-01`;
const named = (name: string): ReadableSpan[] => spans().filter((s) => s.name === name);

describe('OpenTelemetry: one trace from an HTTP POST through the outbox, the relay and a consumer', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  let server: Server | undefined;
  const stops: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    context.setGlobalContextManager(contextManager);
    trace.setGlobalTracerProvider(provider);
    s = await createTestSchema(databaseUrl, 'otel_trace');
  });
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    server?.closeAllConnections();
    server?.close();
    await s.drop();
    trace.disable();
    context.disable();
  });

  it('HTTP server span → outbox row → relay send span → consumer process span → the next send span, with messaging attributes', async () => {
    const orders = await newTopic(kafka, 'otel_orders');
    const shipments = await newTopic(kafka, 'otel_shipments');
    const tracer = trace.getTracer('test-http');
    const outbox = createOutbox({ schema: s.schema });
    const idempotency = createIdempotency({ db: s.db, schema: s.schema });

    // A stand-in for @opentelemetry/instrumentation-http: a SERVER span active around each request.
    const app = express();
    app.use((req: Request, res: Response, next: NextFunction) => {
      const span: Span = tracer.startSpan(`${req.method} ${req.path}`, { kind: SpanKind.SERVER });
      res.on('finish', () => span.end());
      context.with(trace.setSpan(context.active(), span), next);
    });
    app.post(
      '/orders',
      express.json({ verify: keepRawBody }),
      idempotentExpress(idempotency, { scope: () => 'tenant-7' }, async (req, { db, key }) => {
        const body = req.body as { item: string };
        await outbox.publish(db, { topic: orders, key: `order-${key}`, eventId: `order:${key}`, value: { item: body.item } });
        return { status: 201, json: { ok: true } };
      }),
    );
    server = await new Promise<Server>((resolve) => {
      const srv: Server = app.listen(0, '127.0.0.1', () => resolve(srv));
    });
    const address = server.address();
    const url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/orders`;
    const post = (key: string): Promise<globalThis.Response> =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body: JSON.stringify({ item: 'book' }) });

    const created = await post('k1');
    expect({ status: created.status, body: await created.text() }).toEqual({ status: 201, body: '{"ok":true}' });
    const replay = await post('k1');
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');

    const relay = new OutboxRelay({ brokers, db: s.db, databaseUrl, schema: s.schema, pollIntervalMs: 50 });
    await relay.start();
    stops.push(() => relay.stop());

    const group = uniqueName('otel_group');
    const consumer = new IdempotentConsumer<{ item: string }>({
      brokers, groupId: group, topics: [orders], db: s.db, schema: s.schema, mode: 'event',
      handler: async (event, { trx, outbox: out }) => {
        await out.publish(trx, { topic: shipments, key: String(event.key), eventId: `ship:${event.id}`, value: { from: event.id } });
      },
    });
    await consumer.start();
    stops.push(() => consumer.stop());
    await waitFor(() => consumer.stats.processed, (n) => n >= 1, 60_000, 'the order consumed');
    // The same record again (a producer retry): a duplicate in a process span of its own.
    const [relayed] = await readTopic(kafka, orders);
    if (relayed === undefined) throw new Error('the order was not relayed');
    await produceMessages(kafka, orders, [{ key: relayed.key, value: relayed.value, headers: relayed.headers }]);
    await waitFor(() => consumer.stats.duplicates, (n) => n >= 1, 60_000, 'the duplicate skipped');
    await waitFor(() => named(`send ${shipments}`).length, (n) => n >= 1, 60_000, 'the shipment relayed');

    // The HTTP server spans: the outcome and the key's scope as attributes.
    const [first, second] = named('POST /orders');
    expect(first?.attributes).toMatchObject({ 'effectively.idempotency.outcome': 'claimed', 'effectively.idempotency.scope': 'tenant-7' });
    expect(second?.attributes).toMatchObject({ 'effectively.idempotency.outcome': 'replayed', 'effectively.idempotency.scope': 'tenant-7' });
    const http = first as ReadableSpan;
    const traceId = http.spanContext().traceId;

    // The relay's send span: a PRODUCER child of the HTTP span (the context stored in the row).
    const [send] = named(`send ${orders}`);
    expect(send).toBeDefined();
    const sendSpan = send as ReadableSpan;
    expect(sendSpan.kind).toBe(SpanKind.PRODUCER);
    expect(sendSpan.spanContext().traceId).toBe(traceId);
    expect(parentOf(sendSpan)).toBe(http.spanContext().spanId);
    expect(sendSpan.attributes).toMatchObject({
      'messaging.system': 'kafka',
      'messaging.operation.type': 'send',
      'messaging.destination.name': orders,
      'messaging.message.id': 'order:k1',
      'messaging.kafka.message.key': 'order-k1',
    });
    expect(sendSpan.status.code).not.toBe(SpanStatusCode.ERROR);
    // The record carries the relay's span, not the writer's.
    expect(header(relayed, 'traceparent')).toBe(traceparentOf(sendSpan.spanContext()));

    // The consumer's process span: a CONSUMER child of the relay's send span.
    const processSpans = named(`process ${orders}`);
    const [processed, duplicate] = processSpans;
    const proc = processed as ReadableSpan;
    expect(proc.kind).toBe(SpanKind.CONSUMER);
    expect(proc.spanContext().traceId).toBe(traceId);
    expect(parentOf(proc)).toBe(sendSpan.spanContext().spanId);
    expect(proc.attributes).toMatchObject({
      'messaging.system': 'kafka',
      'messaging.operation.type': 'process',
      'messaging.destination.name': orders,
      'messaging.destination.partition.id': '0',
      'messaging.consumer.group.name': group,
      'messaging.message.id': 'order:k1',
      'messaging.kafka.message.key': 'order-k1',
      'messaging.kafka.offset': 0,
      'effectively.outcome': 'committed',
      'effectively.processed': 1,
    });
    // The redelivered copy: same parent (its headers), recorded as a duplicate.
    expect(duplicate?.attributes).toMatchObject({ 'effectively.outcome': 'committed', 'effectively.duplicates': 1, 'effectively.processed': 0 });
    expect(duplicate?.events.map((e) => e.name)).toEqual(['duplicate']);

    // The handler ran inside the process span: its outbox row, and so the next send, continue from it.
    const [next] = named(`send ${shipments}`);
    expect(next?.spanContext().traceId).toBe(traceId);
    expect(next && parentOf(next)).toBe(proc.spanContext().spanId);
    expect(next?.attributes).toMatchObject({ 'messaging.message.id': 'ship:order:k1' });
  });

  it('batch mode: one process span per chunk, linked to every record it handled', async () => {
    const topic = await newTopic(kafka, 'otel_batch');
    const tracer = trace.getTracer('test-producer');
    const contexts: string[] = [];
    const messages = [0, 1, 2].map((i) => {
      const span = tracer.startSpan(`create ${topic}`, { kind: SpanKind.PRODUCER });
      // What a producer instrumentation writes: the W3C context of its create span.
      const headers: Record<string, string> = { 'event-id': `b-${i}`, traceparent: traceparentOf(span.spanContext()) };
      contexts.push(span.spanContext().spanId);
      span.end();
      return { key: `k${i}`, value: JSON.stringify({ i }), headers };
    });
    await produceMessages(kafka, topic, messages);
    const consumer = new IdempotentConsumer({ brokers, groupId: uniqueName('otel_batch'), topics: [topic], db: s.db, schema: s.schema, mode: 'batch', handler: async () => {} });
    await consumer.start();
    stops.push(() => consumer.stop());
    await waitFor(() => consumer.stats.processed, (n) => n >= 3, 60_000, 'three events');
    const chunks = named(`process ${topic}`);
    // A chunk of several records links to each; a chunk of one (a split fetch) is the record's child.
    const linked = chunks.flatMap((c) => (c.links.length > 0 ? c.links.map((l) => l.context.spanId) : [parentOf(c)]));
    expect(linked.sort()).toEqual([...contexts].sort());
    for (const c of chunks.filter((x) => x.links.length > 1)) {
      expect(parentOf(c)).toBeUndefined();
      expect(c.attributes['messaging.batch.message_count']).toBe(c.links.length);
    }
  });
});
