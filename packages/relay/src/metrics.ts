import { PrometheusMetrics, type MetricDefinition, type Metrics } from '@effectively/core';
import type { ProduceFailureKind } from './kafka-adapter';
import type { Registry } from 'prom-client';

/** The relay's metrics, for {@link PrometheusMetrics} or your own `Metrics`. */
export const RELAY_METRICS = {
  relay_published_total: { type: 'counter', help: 'Outbox rows acknowledged by Kafka (then deleted from the outbox).', labelNames: ['schema', 'topic'] },
  relay_failed_attempts_total: { type: 'counter', help: 'Failed attempts to publish an outbox row (each one backs the row off or parks it).', labelNames: ['schema', 'topic', 'reason'] },
  relay_parked_total: { type: 'counter', help: 'Outbox rows parked after maxAttempts refusals; see `effectively outbox parked`.', labelNames: ['schema', 'topic', 'reason'] },
  relay_send_errors_total: { type: 'counter', help: 'Kafka sends that failed, by kind (unknown-topic, not-authorized, message-too-large, invalid-record, unavailable, retriable); a topic refused as a whole backs off, another failed batch is then sent row by row.', labelNames: ['schema', 'kind'] },
  relay_cycle_errors_total: { type: 'counter', help: 'Claim cycles that failed as a whole (database or Kafka unavailable); nothing unacknowledged was deleted.', labelNames: ['schema'] },
  relay_backlog_rows: { type: 'gauge', help: 'Outbox rows waiting to be published (all lanes, backing-off rows included).', labelNames: ['schema'] },
  relay_parked_rows: { type: 'gauge', help: 'Outbox rows parked, waiting for an operator.', labelNames: ['schema'] },
  relay_oldest_pending_age_seconds: { type: 'gauge', help: 'Age of the oldest unpublished row (0 when none).', labelNames: ['schema'] },
  relay_lanes_owned: { type: 'gauge', help: 'Outbox lanes this relay holds the lease of.', labelNames: ['schema'] },
  relay_listener_connected: { type: 'gauge', help: '1 while the LISTEN connection is up, 0 while the relay only polls.', labelNames: ['schema'] },
  relay_publish_latency_seconds: {
    type: 'histogram',
    help: "From the writing transaction's start to Kafka's acknowledgement, per row.",
    labelNames: ['schema'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  },
  relay_send_duration_seconds: { type: 'histogram', help: 'Duration of one Kafka send (a claimed batch).', labelNames: ['schema'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30] },
  relay_batch_size: { type: 'histogram', help: 'Rows per claim that found rows.', labelNames: ['schema'], buckets: [1, 10, 50, 100, 250, 500, 1000, 5000] },
} as const satisfies Record<string, MetricDefinition>;

/** A prom-client `Metrics` with the relay's metrics registered on use in `registry`. */
export function relayPrometheusMetrics(registry: Registry): PrometheusMetrics {
  return new PrometheusMetrics(registry, RELAY_METRICS);
}

const FAILURE_KINDS = Object.keys({
  'unknown-topic': true,
  'not-authorized': true,
  'message-too-large': true,
  'invalid-record': true,
  unavailable: true,
  retriable: true,
} satisfies Record<ProduceFailureKind, true>) as ProduceFailureKind[];

/**
 * Puts the relay's counters at 0 as soon as their labels are known (an increment by 0), so
 * `rate()`/`increase()` see the first event: the per-schema ones at construction, the per-topic
 * ones the first time a claim holds rows of that topic (before they are sent).
 */
export class ZeroedCounters {
  private readonly topicsSeen = new Set<string>();

  constructor(
    private readonly metrics: Metrics,
    private readonly labels: { schema: string },
  ) {
    metrics.increment('relay_cycle_errors_total', labels, 0);
    for (const kind of FAILURE_KINDS) metrics.increment('relay_send_errors_total', { ...labels, kind }, 0);
  }

  /** Zeroes the per-topic counters of topics not seen before. */
  topicsOf(rows: ReadonlyArray<{ topic: string }>): void {
    for (const { topic } of rows) {
      if (this.topicsSeen.has(topic)) continue;
      this.topicsSeen.add(topic);
      const labels = { ...this.labels, topic };
      this.metrics.increment('relay_published_total', labels, 0);
      for (const reason of FAILURE_KINDS) {
        // A row whose partition was unavailable (while the cluster answered) backs off but is never parked.
        this.metrics.increment('relay_failed_attempts_total', { ...labels, reason }, 0);
        if (reason !== 'unavailable') this.metrics.increment('relay_parked_total', { ...labels, reason }, 0);
      }
    }
  }
}
