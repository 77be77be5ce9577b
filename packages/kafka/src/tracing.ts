import { MessagingAttributes as A, noopTracing, type SpanScope, type TraceContext, type Tracing } from '@effectively/core';
import type { RawMessage } from './kafka-adapter';

/** How a chunk's transaction ended, recorded on its span as `effectively.outcome`. */
export type TransactionOutcome = 'committed' | 'rolled_back' | 'fenced';

/** The W3C trace context an incoming record carries (`traceparent`, `tracestate` headers). */
export function traceContextOf(message: RawMessage): TraceContext | undefined {
  const text = (name: string): string | undefined => {
    const raw = message.headers[name];
    const first = Array.isArray(raw) ? raw[0] : raw;
    return first === undefined ? undefined : first.toString();
  };
  const traceparent = text('traceparent');
  if (traceparent === undefined) return undefined;
  const tracestate = text('tracestate');
  return tracestate === undefined ? { traceparent } : { traceparent, tracestate };
}

function keyText(key: Buffer | null): string | undefined {
  if (key === null) return undefined;
  const text = key.toString('utf8');
  return Buffer.from(text, 'utf8').equals(key) ? text : undefined;
}

/**
 * The `process <topic>` span of one chunk transaction (OpenTelemetry messaging conventions,
 * kind CONSUMER). A chunk of one record (per-event mode) is a child of the record's context; a
 * larger chunk is a root with one link per record. Duplicates, conflicts, dead letters and
 * handler failures are span events; the span ends with the transaction's outcome.
 */
export class ChunkTrace {
  private readonly span: SpanScope;
  private rollback: { error: unknown } | undefined;

  constructor(tracing: Tracing, group: string, messages: readonly RawMessage[]) {
    const first = messages[0] as RawMessage;
    const single = messages.length === 1;
    if (!tracing.enabled()) {
      this.span = noopTracing.startSpan('', { kind: 'consumer' });
      return;
    }
    this.span = tracing.startSpan(`process ${first.topic}`, {
      kind: 'consumer',
      ...(single ? { parent: traceContextOf(first) } : { links: messages.map(traceContextOf) }),
      attributes: {
        [A.system]: 'kafka',
        [A.operationType]: 'process',
        [A.operationName]: 'process',
        [A.destination]: first.topic,
        [A.partition]: String(first.partition),
        [A.consumerGroup]: group,
        ...(single ? { [A.kafkaOffset]: Number(first.offset), [A.kafkaKey]: keyText(first.key) } : { [A.batchCount]: messages.length }),
        ...(single && first.value === null ? { [A.kafkaTombstone]: true } : {}),
      },
    });
  }

  /** Sets the event id once known (per-event chunks). */
  eventId(id: string, count: number): void {
    if (count === 1) this.span.setAttributes({ [A.messageId]: id });
  }

  /**
   * Runs a handler for `message` inside this span, so the rows it publishes record it; with
   * no span (tracing off), inside the record's own trace context, as without tracing.
   */
  context(message: RawMessage): TraceContext | undefined {
    return this.span.traceContext ?? traceContextOf(message);
  }

  run<R>(fn: () => R): R {
    return this.span.run(fn);
  }

  duplicate(message: RawMessage, id: string, conflict: boolean): void {
    if (!this.span.recording) return;
    this.span.addEvent(conflict ? 'conflicting duplicate' : 'duplicate', { [A.messageId]: id, [A.kafkaOffset]: Number(message.offset) });
  }

  deadLettered(message: RawMessage, id: string, reason: string): void {
    if (!this.span.recording) return;
    this.span.addEvent('dead-lettered', { [A.messageId]: id, [A.kafkaOffset]: Number(message.offset), 'effectively.dead_letter.reason': reason });
  }

  handlerFailed(message: RawMessage, id: string, attempt: number, error: unknown): void {
    if (!this.span.recording) return;
    this.span.recordException(error);
    this.span.addEvent('handler failed', { [A.messageId]: id, [A.kafkaOffset]: Number(message.offset), 'effectively.attempt': attempt });
  }

  /** The transaction was rolled back although the chunk returns an outcome (a failed handler retried later). */
  rolledBack(error: unknown): void {
    this.rollback = { error };
  }

  /** Ends the span with the transaction's outcome and the chunk's counts. */
  end(reported: TransactionOutcome, counts: { processed: number; duplicates: number; conflicts: number; deadLettered: number; retry: boolean }, failure?: unknown): void {
    const outcome = this.rollback !== undefined && reported === 'committed' ? 'rolled_back' : reported;
    const error = failure ?? this.rollback?.error;
    if (this.span.recording) {
      this.span.setAttributes({
        'effectively.outcome': outcome,
        'effectively.processed': counts.processed,
        'effectively.duplicates': counts.duplicates,
        'effectively.conflicts': counts.conflicts,
        'effectively.dead_lettered': counts.deadLettered,
        'effectively.retry': counts.retry,
      });
    }
    this.span.end(outcome === 'committed' ? undefined : (error ?? new Error(outcome)));
  }
}
