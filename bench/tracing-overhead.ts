/**
 * Per-chunk cost of the consumer's tracing hooks and per-row cost of the outbox's trace-context
 * lookup: without OpenTelemetry (noopTracing), with @opentelemetry/api but no provider (the
 * default for most users), and with a provider recording spans. `npx tsx bench/tracing-overhead.ts`
 */
import { currentTraceContext, noopTracing, openTelemetryTracing, type Tracing } from '@effectively/core';
import { ChunkTrace } from '../packages/kafka/src/tracing';
import type { RawMessage } from '../packages/kafka/src';

const message: RawMessage = {
  topic: 'orders', partition: 0, offset: '42', key: Buffer.from('k1'), value: Buffer.from('{}'), timestamp: '0',
  headers: { 'event-id': Buffer.from('e-1'), traceparent: Buffer.from('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') },
};
const counts = { processed: 1, duplicates: 0, conflicts: 0, deadLettered: 0, retry: false };

function nsPer(n: number, fn: () => void): number {
  for (let i = 0; i < 10_000; i++) fn();
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  return Number(process.hrtime.bigint() - start) / n;
}

function chunk(tracing: Tracing): () => void {
  return () => {
    const t = new ChunkTrace(tracing, 'g', [message]);
    t.run(() => t.context(message));
    t.end('committed', counts);
  };
}

async function main(): Promise<void> {
  const rows: Array<[string, number]> = [];
  const n = 200_000;
  rows.push(['consumer chunk, noopTracing', nsPer(n, chunk(noopTracing))]);
  const otel = openTelemetryTracing('bench');
  rows.push(['consumer chunk, @opentelemetry/api, no provider', nsPer(n, chunk(otel))]);
  rows.push(['outbox row trace lookup, no provider', nsPer(n, () => void currentTraceContext())]);
  const { trace, context } = await import('@opentelemetry/api');
  const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
  const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');
  const exporter = new InMemorySpanExporter();
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
  rows.push(['consumer chunk, provider recording (in-memory exporter)', nsPer(20_000, () => {
    chunk(otel)();
    exporter.reset();
  })]);
  for (const [what, ns] of rows) process.stdout.write(`${what.padEnd(58)} ${ns.toFixed(0).padStart(7)} ns\n`);
}

void main();
