import { AsyncLocalStorage } from 'node:async_hooks';
import { openTelemetryTracing, type Tracing } from './tracing';

/** W3C Trace Context (https://www.w3.org/TR/trace-context/) as carried in headers. */
export interface TraceContext {
  traceparent: string;
  tracestate?: string;
}

/** Returns the trace context current where an outbox row is written, if any. */
export type TraceContextProvider = () => TraceContext | undefined;

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const storage = new AsyncLocalStorage<TraceContext>();

/** Whether `value` is a well-formed W3C `traceparent` (all-zero ids are invalid). */
export function isTraceparent(value: unknown): value is string {
  return typeof value === 'string' && TRACEPARENT.test(value) && !/^..-0{32}-/.test(value) && !/-0{16}-..$/.test(value) && !value.startsWith('ff');
}

/**
 * Runs `fn` with `context` as the current trace context, so outbox rows written inside it carry
 * `traceparent` (and `tracestate`). The idempotent consumer runs each handler this way with the
 * incoming message's headers; call it yourself in HTTP handlers, or give the outbox a
 * {@link TraceContextProvider} that reads your tracer (e.g. OpenTelemetry's `propagation.inject`).
 * An invalid `traceparent` is ignored, not propagated.
 */
export function runWithTraceContext<R>(context: TraceContext | undefined, fn: () => R): R {
  if (context === undefined || !isTraceparent(context.traceparent)) return fn();
  return storage.run(context, fn);
}

let otel: Tracing | undefined;

/**
 * The trace context current around the caller: the active OpenTelemetry span's when
 * `@opentelemetry/api` is installed and a span is active, else the one set by
 * {@link runWithTraceContext}, else none.
 */
export const currentTraceContext: TraceContextProvider = () => (otel ??= openTelemetryTracing('@effectively/core')).activeTraceContext() ?? storage.getStore();
