import { PrometheusMetrics, type MetricDefinition, type Metrics } from '@effectively/core';
import type { Registry } from 'prom-client';

const partitionLabels = ['group', 'topic', 'partition'] as const;

/** The consumer's metrics, for {@link PrometheusMetrics} or your own `Metrics`. */
export const CONSUMER_METRICS = {
  events_processed_total: { type: 'counter', help: 'Events whose handler committed.', labelNames: partitionLabels },
  events_duplicate_total: { type: 'counter', help: 'Events skipped because (group, id) was already processed.', labelNames: partitionLabels },
  events_duplicate_dead_lettered_total: { type: 'counter', help: 'Copies of dead-lettered events skipped without a new re-drive id (not in events_duplicate_total).', labelNames: partitionLabels },
  events_redriven_total: { type: 'counter', help: 'Dead-lettered events applied by a deliberate re-drive (dead-letter replay).', labelNames: partitionLabels },
  events_conflict_total: { type: 'counter', help: 'Duplicates whose payload differs from the processed one.', labelNames: partitionLabels },
  events_dead_lettered_total: { type: 'counter', help: 'Events recorded as dead-lettered and sent to the dead-letter topic.', labelNames: [...partitionLabels, 'reason'] },
  retries_total: { type: 'counter', help: 'Retries, by kind (handler, transient database error).', labelNames: [...partitionLabels, 'kind'] },
  offset_resets_total: { type: 'counter', help: "Partitions whose position was moved off the group's committed offset (below the log start, past the end, out of range while fetching), by reason.", labelNames: [...partitionLabels, 'reason'] },
  fenced_total: { type: 'counter', help: 'Transactions rolled back because the member lost its partition.', labelNames: partitionLabels },
  batch_size: { type: 'histogram', help: 'Messages per transaction.', labelNames: ['group'], buckets: [1, 10, 50, 100, 250, 500, 1000, 5000] },
  batch_duration_seconds: { type: 'histogram', help: 'Duration of one chunk transaction.', labelNames: ['group'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5] },
  consumer_lag_messages: { type: 'gauge', help: "Records behind the partition's high watermark as this member sees it (high watermark at the last fetch minus the next offset to process).", labelNames: partitionLabels },
  consumer_topic_retention_seconds: { type: 'gauge', help: "A subscribed topic's retention.ms in seconds, read at start (+Inf: unlimited).", labelNames: ['group', 'topic'] },
  dedup_oldest_record_age_seconds: { type: 'gauge', help: "Age of the oldest dedup record in the consumer schema (processed_events and processed_event_generations; it drops when records are pruned or a generation is forgotten); read every minute.", labelNames: ['group'] },
  dedup_live_generations: { type: 'gauge', help: 'Generations of dedup records still checked by claims (the current one included; 0 when retention is not by generations); read at each rotation check.', labelNames: ['group'] },
  dedup_last_rotation_timestamp_seconds: { type: 'gauge', help: 'Unix time at which the current dedup generation became current (by any process; 0 when retention is not by generations); read at each rotation check.', labelNames: ['group'] },
  dedup_rotations_total: { type: 'counter', help: 'Rotation checks this consumer ran, by result: rotated, not_due, postponed (no empty slot), failed.', labelNames: ['group', 'result'] },
  dedup_generations_forgotten_total: { type: 'counter', help: 'Generations (and the pre-generations processed_events) this consumer emptied because their records were older than the window.', labelNames: ['group'] },
  dedup_hit_ratio: { type: 'gauge', help: 'Share of messages seen so far that were duplicates.', labelNames: ['group'] },
} as const satisfies Record<string, MetricDefinition>;

/** A prom-client `Metrics` with the consumer's metrics registered on use in `registry`. */
export function consumerPrometheusMetrics(registry: Registry): PrometheusMetrics {
  return new PrometheusMetrics(registry, CONSUMER_METRICS);
}

/**
 * Sets every per-partition counter of `partition` to 0 (an increment by 0), so the series exist
 * before the first event and `rate()`/`increase()` count it. Called when a partition is assigned.
 */
export function zeroPartitionCounters(metrics: Metrics, labels: { group: string; topic: string; partition: number }): void {
  for (const name of ['events_processed_total', 'events_duplicate_total', 'events_conflict_total', 'fenced_total', 'events_duplicate_dead_lettered_total', 'events_redriven_total'] as const) metrics.increment(name, labels, 0);
  for (const reason of ['below-log-start', 'past-end', 'out-of-range']) metrics.increment('offset_resets_total', { ...labels, reason }, 0);
  metrics.increment('events_dead_lettered_total', { ...labels, reason: 'any' }, 0);
  for (const kind of ['handler', 'transient']) metrics.increment('retries_total', { ...labels, kind }, 0);
}
