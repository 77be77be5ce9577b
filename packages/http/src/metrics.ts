import type { MetricDefinition, Metrics } from '@effectively/core';

/** Names of the counters this package reports through the `Metrics` seam. */
export const IdempotencyMetric = {
  claims: 'idempotency_claims_total',
  replays: 'idempotency_replays_total',
  conflicts: 'idempotency_conflicts_total',
  mismatches: 'idempotency_mismatches_total',
  takeovers: 'idempotency_takeovers_total',
  released: 'idempotency_released_total',
  leaseLost: 'idempotency_lease_lost_total',
  rejectedKeys: 'idempotency_rejected_keys_total',
  pruned: 'idempotency_pruned_total',
  inFlight: 'idempotency_keys_in_flight',
} as const;

const route = ['route'] as const;

/**
 * Definitions for `new PrometheusMetrics(registry, IDEMPOTENCY_METRICS)` from
 * `@effectively/core`; every request counter is labelled with the route template.
 */
export const IDEMPOTENCY_METRICS: Readonly<Record<string, MetricDefinition>> = Object.freeze({
  [IdempotencyMetric.claims]: { type: 'counter', help: 'Keys claimed by a first request (the handler ran).', labelNames: route },
  [IdempotencyMetric.replays]: { type: 'counter', help: 'Retries answered with the stored response.', labelNames: route },
  [IdempotencyMetric.conflicts]: { type: 'counter', help: 'Retries answered 409 because the first request was still running.', labelNames: route },
  [IdempotencyMetric.mismatches]: { type: 'counter', help: 'Keys reused with a different request, answered 422.', labelNames: route },
  [IdempotencyMetric.takeovers]: { type: 'counter', help: 'Keys taken over after their lease ran out (a crashed or stuck first request).', labelNames: route },
  [IdempotencyMetric.released]: { type: 'counter', help: 'Claims released without storing a response (handler failed or answered 5xx).', labelNames: route },
  [IdempotencyMetric.leaseLost]: { type: 'counter', help: 'Handlers that finished after another request had taken their key over.', labelNames: route },
  [IdempotencyMetric.rejectedKeys]: { type: 'counter', help: 'Requests refused with 400 for a missing or malformed Idempotency-Key.', labelNames: route },
  [IdempotencyMetric.inFlight]: { type: 'gauge', help: 'Keys claimed whose handler is running in this process.', labelNames: route },
  [IdempotencyMetric.pruned]: { type: 'counter', help: 'Expired keys deleted by prune().', labelNames: [] },
});

const ROUTE_COUNTERS = [
  IdempotencyMetric.claims,
  IdempotencyMetric.replays,
  IdempotencyMetric.conflicts,
  IdempotencyMetric.mismatches,
  IdempotencyMetric.takeovers,
  IdempotencyMetric.released,
  IdempotencyMetric.leaseLost,
  IdempotencyMetric.rejectedKeys,
] as const;

/**
 * Puts counters at 0 as soon as their labels are known (an increment by 0), so `rate()` and
 * `increase()` see their first event: `idempotency_pruned_total` at creation, and every
 * per-route counter the first time a route is handled (a route's first replay, conflict or
 * mismatch is then counted from 0).
 */
export class ZeroedCounters {
  private readonly routes = new Set<string>();

  constructor(private readonly metrics: Metrics) {
    metrics.increment(IdempotencyMetric.pruned, {}, 0);
  }

  route(route: string): void {
    if (this.routes.has(route)) return;
    this.routes.add(route);
    for (const name of ROUTE_COUNTERS) this.metrics.increment(name, { route }, 0);
  }
}
