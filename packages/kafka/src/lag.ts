import type { Metrics } from '@effectively/core';

/**
 * Reports `consumer_lag_messages` per partition as this member sees it: the partition's high
 * watermark (from the last fetch) minus the next offset to process. Partitions this member no
 * longer owns after a rebalance are set to 0, so a stale value never outlives the assignment
 * (their new owner reports them).
 */
export class LagReporter {
  private readonly reported = new Map<string, { topic: string; partition: number }>();

  constructor(
    private readonly metrics: Metrics,
    private readonly group: string,
  ) {}

  /**
   * `next` is the first offset of a fetched batch before it is handled, and the offset after
   * the last settled event once a chunk commits. Nothing is reported without a high watermark
   * (a client that gives none).
   */
  report(topic: string, partition: number, highWatermark: string | undefined, next: string | bigint | undefined): void {
    if (highWatermark === undefined || next === undefined || !/^\d+$/.test(highWatermark)) return;
    const lag = BigInt(highWatermark) - BigInt(next);
    this.reported.set(`${topic}:${partition}`, { topic, partition });
    this.metrics.set('consumer_lag_messages', Number(lag > 0n ? lag : 0n), { group: this.group, topic, partition });
  }

  /** After a rebalance: zeroes the partitions not in `owned`. */
  assigned(owned: ReadonlyArray<{ topic: string; partition: number }>): void {
    const keep = new Set(owned.map((p) => `${p.topic}:${p.partition}`));
    for (const [key, p] of this.reported) {
      if (keep.has(key)) continue;
      this.reported.delete(key);
      this.metrics.set('consumer_lag_messages', 0, { group: this.group, topic: p.topic, partition: p.partition });
    }
  }
}
