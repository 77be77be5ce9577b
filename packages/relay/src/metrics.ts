import { PrometheusMetrics, type MetricDefinition } from '@effectively/core';
import type { Registry } from 'prom-client';

/** The relay's metrics, for {@link PrometheusMetrics} or your own `Metrics`. */
export const RELAY_METRICS = {
  relay_published_total: { type: 'counter', help: 'Outbox rows acknowledged by Kafka and marked published.', labelNames: ['schema', 'topic'] },
  relay_failed_attempts_total: { type: 'counter', help: 'Failed attempts to publish an outbox row (each one backs the row off or parks it).', labelNames: ['schema', 'topic', 'reason'] },
  relay_parked_total: { type: 'counter', help: 'Outbox rows parked (quarantined) after too many attempts or a non-retryable error.', labelNames: ['schema', 'topic', 'reason'] },
  relay_lag_seconds: { type: 'gauge', help: 'Age of the oldest pending outbox row (0 when none is pending).', labelNames: ['schema'] },
  relay_leader: { type: 'gauge', help: '1 while this relay holds the schema lock and publishes, 0 on standby.', labelNames: ['schema'] },
  relay_batch_duration_seconds: { type: 'histogram', help: 'Duration of one poll-publish-mark cycle that found rows.', labelNames: ['schema'], buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30] },
  relay_batch_size: { type: 'histogram', help: 'Rows fetched per cycle.', labelNames: ['schema'], buckets: [1, 10, 50, 100, 250, 500, 1000, 5000] },
} as const satisfies Record<string, MetricDefinition>;

/** A prom-client `Metrics` with the relay's metrics registered on use in `registry`. */
export function relayPrometheusMetrics(registry: Registry): PrometheusMetrics {
  return new PrometheusMetrics(registry, RELAY_METRICS);
}
