/**
 * The one place that talks to OpenTelemetry. `@opentelemetry/api` is an optional peer
 * dependency: it is loaded lazily with a guarded `require`, and without it (or without a
 * registered tracer provider) every span here is a no-op that costs one check and changes
 * nothing: no headers are added or rewritten.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as OtelApi from '@opentelemetry/api';
import { isTraceparent, type TraceContext } from './trace-context';

/** Attribute values as OpenTelemetry accepts them. */
export type SpanAttributes = Record<string, string | number | boolean | undefined>;

/** `consumer` (process), `producer` (send), `internal`. */
export type SpanKindName = 'consumer' | 'producer' | 'internal';

/** How to start a span. */
export interface StartSpanOptions {
  kind: SpanKindName;
  /** The remote parent (e.g. an incoming record's `traceparent`); default: the active context. */
  parent?: TraceContext | undefined;
  /** Contexts the span is linked to (batch processing: one per record). */
  links?: ReadonlyArray<TraceContext | undefined>;
  attributes?: SpanAttributes;
}

/** A started span; every method is safe to call on the no-op span. */
export interface SpanScope {
  /** False for the no-op span: callers skip work only spans need. */
  readonly recording: boolean;
  /** This span's W3C context (for headers and outbox rows); `undefined` for the no-op span. */
  readonly traceContext: TraceContext | undefined;
  setAttributes(attributes: SpanAttributes): void;
  addEvent(name: string, attributes?: SpanAttributes): void;
  /** Records the exception as a span event (does not end the span or set its status). */
  recordException(error: unknown): void;
  /** Runs `fn` with this span as the active span (outbox rows written inside record it). */
  run<R>(fn: () => R): R;
  /** Ends the span; `error` sets status ERROR with its message. Later calls are ignored. */
  end(error?: unknown): void;
}

/** The tracing seam the packages report through; {@link openTelemetryTracing} or {@link noopTracing}. */
export interface Tracing {
  /** Whether spans are made now (a provider is registered); callers skip building attributes otherwise. */
  enabled(): boolean;
  startSpan(name: string, options: StartSpanOptions): SpanScope;
  /** The W3C context of the active span, if any (what an outbox row written now should carry). */
  activeTraceContext(): TraceContext | undefined;
  /** Sets attributes on the active span (e.g. the HTTP server span), if there is one. */
  annotateActiveSpan(attributes: SpanAttributes): void;
}

const NOOP_SPAN: SpanScope = Object.freeze({
  recording: false,
  traceContext: undefined,
  setAttributes: () => {},
  addEvent: () => {},
  recordException: () => {},
  run: <R>(fn: () => R): R => fn(),
  end: () => {},
});

/** Tracing that does nothing. */
export const noopTracing: Tracing = Object.freeze({
  enabled: () => false,
  startSpan: () => NOOP_SPAN,
  activeTraceContext: () => undefined,
  annotateActiveSpan: () => {},
});

type Api = typeof OtelApi;
let loaded: Api | null | undefined;

/** `@opentelemetry/api` if it is installed, loaded once; `null` when it is not. */
function api(): Api | null {
  if (loaded === undefined) {
    try {
      // CommonJS: this package's own resolution; an ES module build has no `require`: resolve from the application's directory.
      const load = typeof require === 'function' ? require : createRequire(path.join(process.cwd(), 'package.json'));
      loaded = load('@opentelemetry/api') as Api;
    } catch {
      loaded = null;
    }
  }
  return loaded;
}

function clean(attributes: SpanAttributes | undefined): OtelApi.Attributes {
  const out: OtelApi.Attributes = {};
  if (attributes === undefined) return out;
  for (const [k, v] of Object.entries(attributes)) if (v !== undefined) out[k] = v;
  return out;
}

function toW3c(span: OtelApi.SpanContext): TraceContext | undefined {
  const traceparent = `00-${span.traceId}-${span.spanId}-${(span.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
  if (!isTraceparent(traceparent)) return undefined;
  const tracestate = span.traceState?.serialize();
  return tracestate === undefined || tracestate === '' ? { traceparent } : { traceparent, tracestate };
}

function fromW3c(otel: Api, context: TraceContext): OtelApi.SpanContext | undefined {
  if (!isTraceparent(context.traceparent)) return undefined;
  const [, traceId, spanId, flags] = context.traceparent.split('-') as [string, string, string, string];
  return {
    traceId,
    spanId,
    traceFlags: Number.parseInt(flags, 16) & 0x01,
    isRemote: true,
    ...(context.tracestate !== undefined && context.tracestate !== '' ? { traceState: otel.createTraceState(context.tracestate) } : {}),
  };
}

const KINDS: Record<SpanKindName, number> = { internal: 0, producer: 3, consumer: 4 };

class OtelSpan implements SpanScope {
  readonly recording = true;
  readonly traceContext: TraceContext | undefined;
  private ended = false;

  constructor(
    private readonly otel: Api,
    private readonly span: OtelApi.Span,
    private readonly context: OtelApi.Context,
  ) {
    this.traceContext = toW3c(span.spanContext());
  }

  setAttributes(attributes: SpanAttributes): void {
    this.span.setAttributes(clean(attributes));
  }

  addEvent(name: string, attributes?: SpanAttributes): void {
    this.span.addEvent(name, clean(attributes));
  }

  recordException(error: unknown): void {
    this.span.recordException(error instanceof Error ? error : String(error));
  }

  run<R>(fn: () => R): R {
    return this.otel.context.with(this.context, fn);
  }

  end(error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (error !== undefined) {
      this.span.setStatus({ code: this.otel.SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      if (error instanceof Error) this.span.setAttribute('error.type', error.name);
    }
    this.span.end();
  }
}

/**
 * Tracing through the global OpenTelemetry tracer provider, as instrumentation scope `name`.
 * Spans are made only while a provider is registered (checked at each span, so registering one
 * after start-up works); otherwise this behaves exactly like {@link noopTracing}.
 */
export function openTelemetryTracing(name: string, version?: string): Tracing {
  const tracer = (): { otel: Api; tracer: OtelApi.Tracer } | undefined => {
    const otel = api();
    if (otel === null) return undefined;
    const provider = otel.trace.getTracerProvider();
    // The global provider is a proxy until one is registered; a proxy without delegate is the no-op.
    const delegate = provider instanceof otel.ProxyTracerProvider ? provider.getDelegateTracer(name, version) : provider.getTracer(name, version);
    return delegate === undefined ? undefined : { otel, tracer: delegate };
  };
  return Object.freeze({
    enabled: (): boolean => tracer() !== undefined,
    startSpan(spanName: string, options: StartSpanOptions): SpanScope {
      const t = tracer();
      if (t === undefined) return NOOP_SPAN;
      const { otel } = t;
      const remote = options.parent === undefined ? undefined : fromW3c(otel, options.parent);
      const parent = remote === undefined ? otel.context.active() : otel.trace.setSpanContext(otel.context.active(), remote);
      const links: OtelApi.Link[] = [];
      for (const l of options.links ?? []) {
        const c = l === undefined ? undefined : fromW3c(otel, l);
        if (c !== undefined) links.push({ context: c });
      }
      const span = t.tracer.startSpan(spanName, { kind: KINDS[options.kind], attributes: clean(options.attributes), links }, parent);
      return new OtelSpan(otel, span, otel.trace.setSpan(parent, span));
    },
    activeTraceContext(): TraceContext | undefined {
      const otel = api();
      if (otel === null) return undefined;
      const span = otel.trace.getActiveSpan();
      if (span === undefined) return undefined;
      const c = span.spanContext();
      return otel.trace.isSpanContextValid(c) ? toW3c(c) : undefined;
    },
    annotateActiveSpan(attributes: SpanAttributes): void {
      const otel = api();
      const span = otel === null ? undefined : otel.trace.getActiveSpan();
      if (span !== undefined && span.isRecording()) span.setAttributes(clean(attributes));
    },
  });
}

/** OpenTelemetry messaging attribute names (semantic conventions, messaging spans). */
export const MessagingAttributes = Object.freeze({
  system: 'messaging.system',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  destination: 'messaging.destination.name',
  partition: 'messaging.destination.partition.id',
  consumerGroup: 'messaging.consumer.group.name',
  messageId: 'messaging.message.id',
  batchCount: 'messaging.batch.message_count',
  kafkaKey: 'messaging.kafka.message.key',
  kafkaOffset: 'messaging.kafka.offset',
  kafkaTombstone: 'messaging.kafka.message.tombstone',
});
