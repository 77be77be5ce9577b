import { MessagingAttributes as A, openTelemetryTracing, type SpanScope, type TraceContext } from '@effectively/core';
import type { OutboxRow } from './outbox-store';

const tracing = openTelemetryTracing('@effectively/relay');

function storedContext(row: OutboxRow): TraceContext | undefined {
  const traceparent = row.headers?.['traceparent'];
  if (typeof traceparent !== 'string') return undefined;
  const tracestate = row.headers?.['tracestate'];
  return typeof tracestate === 'string' ? { traceparent, tracestate } : { traceparent };
}

function keyText(key: Buffer | null): string | undefined {
  if (key === null) return undefined;
  const text = key.toString('utf8');
  return Buffer.from(text, 'utf8').equals(key) ? text : undefined;
}

/**
 * One `send <topic>` span per row (OpenTelemetry messaging conventions, kind PRODUCER), a child
 * of the trace context stored in the row by its writer, from the send to Kafka's answer. The
 * span's own context replaces `traceparent`/`tracestate` in the record's headers, so the next
 * consumer continues from the relay. Without a tracer provider no span is made and the headers
 * are the row's own.
 */
export class RowSends {
  private readonly spans = new Map<string, SpanScope>();

  constructor(rows: readonly OutboxRow[], schema: string) {
    if (!tracing.enabled()) return;
    for (const row of rows) {
      const span = tracing.startSpan(`send ${row.topic}`, {
        kind: 'producer',
        parent: storedContext(row),
        attributes: {
          [A.system]: 'kafka',
          [A.operationType]: 'send',
          [A.operationName]: 'send',
          [A.destination]: row.topic,
          [A.messageId]: row.event_id,
          [A.kafkaKey]: keyText(row.message_key),
          ...(row.payload === null ? { [A.kafkaTombstone]: true } : {}),
          'effectively.outbox.id': row.id,
          'effectively.outbox.schema': schema,
          'effectively.outbox.attempts': row.attempts,
        },
      });
      if (span.recording) this.spans.set(row.id, span);
    }
  }

  /** The trace headers for `row`'s record: its send span's context when tracing. */
  headers(row: OutboxRow, headers: Record<string, string>): Record<string, string> {
    const context = this.spans.get(row.id)?.traceContext;
    if (context === undefined) return headers;
    const out: Record<string, string> = { ...headers, traceparent: context.traceparent };
    if (context.tracestate === undefined) delete out['tracestate'];
    else out['tracestate'] = context.tracestate;
    return out;
  }

  /** Ends every span: acknowledged, or failed with `error` (and its classification). */
  end(error?: unknown, kind?: string): void {
    for (const span of this.spans.values()) {
      if (kind !== undefined) span.setAttributes({ 'effectively.send_error': kind });
      span.end(error);
    }
    this.spans.clear();
  }
}
