import { openTelemetryTracing, type MetricLabels, type Metrics } from '@effectively/core';
import { IdempotencyMetric } from './metrics';

const tracing = openTelemetryTracing('@effectively/http');

/** What happened to a request's key, as recorded on the active server span. */
export type KeyOutcome = 'claimed' | 'takeover' | 'replayed' | 'conflict' | 'mismatch' | 'rejected';

/**
 * Records the key's outcome and scope as attributes of the active span (the HTTP server span
 * of your OpenTelemetry instrumentation), when there is one: `effectively.idempotency.outcome`,
 * `effectively.idempotency.scope`.
 */
export function annotateKeyOutcome(outcome: KeyOutcome, scope: string): void {
  tracing.annotateActiveSpan({ 'effectively.idempotency.outcome': outcome, 'effectively.idempotency.scope': scope });
}

/** Counts the keys whose handler runs in this process (`idempotency_keys_in_flight`, per route). */
export class KeysInFlight {
  private readonly counts = new Map<string, number>();

  constructor(private readonly metrics: Metrics) {}

  /** Runs `fn` counted as one key in flight on `route`. */
  async run<R>(route: string, fn: () => Promise<R>): Promise<R> {
    this.add(route, 1);
    try {
      return await fn();
    } finally {
      this.add(route, -1);
    }
  }

  private add(route: string, delta: number): void {
    const n = (this.counts.get(route) ?? 0) + delta;
    if (n === 0) this.counts.delete(route);
    else this.counts.set(route, n);
    const labels: MetricLabels = { route };
    this.metrics.set(IdempotencyMetric.inFlight, n, labels);
  }
}
