import type { MetricLabels, Metrics } from '@effectively/core';

/**
 * Reports `consumer_lag_messages` for one partition as this member sees it: the partition's
 * high watermark (from the last fetch) minus the next offset to process. `next` is the first
 * offset of a fetched batch before it is handled, and the offset after the last settled event
 * once a chunk commits. Nothing is reported without a high watermark (a client that gives none).
 */
export function reportLag(metrics: Metrics, labels: MetricLabels, highWatermark: string | undefined, next: string | bigint | undefined): void {
  if (highWatermark === undefined || next === undefined || !/^\d+$/.test(highWatermark)) return;
  const lag = BigInt(highWatermark) - BigInt(next);
  metrics.set('consumer_lag_messages', Number(lag > 0n ? lag : 0n), labels);
}
