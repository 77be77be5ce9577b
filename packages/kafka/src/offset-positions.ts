import type { Logger, Metrics } from '@effectively/core';
import { backoffMs } from './backoff';
import type { Assignment, ConsumerClient, PartitionPosition } from './kafka-adapter';

/** Why a partition's position was moved away from the group's committed offset. */
export type OffsetResetReason = 'below-log-start' | 'past-end' | 'out-of-range';

/** What {@link OffsetPositions} needs from the consumer. */
export interface OffsetPositionsContext {
  client: ConsumerClient;
  groupId: string;
  /** Where a group with no committed offset starts: the earliest record (true) or the end. */
  fromBeginning: boolean;
  logger: Logger;
  metrics: Metrics;
  /** Whether the consumer is still running (retries stop when it is not). */
  running: () => boolean;
  /** Records an offset committed here (start at the end), so later commits stay monotonic. */
  committed: (topic: string, partition: number, offset: bigint) => void;
}

/**
 * Decides where each newly assigned partition starts, before anything of it is fetched.
 *
 * kafkajs knows a single `fromBeginning` for two different cases: a group with no committed
 * offset, and a committed offset that fell out of the log (records deleted by retention or
 * `deleteRecords`). With `fromBeginning: false` it jumped to the end in both, silently skipping
 * records still in the log. Here the client always resets an out-of-range position to the
 * earliest offset, and `fromBeginning` governs only a partition with no committed offset:
 * - committed below the log start (or past the end): resume at the earliest available offset
 *   (duplicates are harmless to an idempotent consumer; skipping is not), logged at warn with
 *   the gap and counted in `offset_resets_total`;
 * - no committed offset and `fromBeginning: false`: start at the high watermark, committed at
 *   once so a restart does not move it;
 * - a reset the client makes by itself while fetching is logged and counted the same way.
 *
 * Batches fetched before a partition's start is decided are dropped (the seek makes them
 * stale), so nothing before the chosen start is handled.
 */
export class OffsetPositions {
  /** Partitions whose reset was already reported (so the client's own reset of the same gap is not counted twice). */
  private readonly reported = new Set<string>();

  constructor(private readonly c: OffsetPositionsContext) {
    c.client.onOffsetReset?.(({ topic, partition }) => {
      if (!this.reported.delete(`${topic}:${partition}`)) this.reset(topic, partition, 'out-of-range', {});
    });
  }

  /**
   * Before joining the group: reports every partition of `topics` whose committed offset is out
   * of the log, with the gap (the client, joining, moves it to the earliest offset). Best effort.
   */
  async beforeJoin(topics: readonly string[]): Promise<void> {
    for (const topic of topics) {
      const positions = this.c.client.positions?.bind(this.c.client);
      if (positions === undefined) return;
      try {
        for (const p of await positions(topic)) {
          const gap = this.outOfRange(p);
          if (gap !== undefined) this.reset(topic, p.partition, gap.reason, gap.detail);
        }
      } catch (error) {
        this.c.logger.warn({ err: error, topic }, 'could not read committed offsets and log bounds before joining');
      }
    }
  }

  /** At each assignment: decides where each assigned partition starts. `onBatch` waits for it. */
  assigned(assignment: Assignment): Promise<void> {
    return this.align(assignment);
  }

  private outOfRange(p: PartitionPosition): { reason: OffsetResetReason; detail: Record<string, string> } | undefined {
    if (p.committed === null) return undefined;
    const committed = BigInt(p.committed);
    if (committed < BigInt(p.logStart)) return { reason: 'below-log-start', detail: { committed: p.committed, logStart: p.logStart, missing: (BigInt(p.logStart) - committed).toString() } };
    if (committed > BigInt(p.highWatermark)) return { reason: 'past-end', detail: { committed: p.committed, logStart: p.logStart, highWatermark: p.highWatermark } };
    return undefined;
  }

  private async align(assignment: Assignment): Promise<void> {
    const byTopic = new Map<string, number[]>();
    for (const { topic, partition } of assignment.partitions) byTopic.set(topic, [...(byTopic.get(topic) ?? []), partition]);
    for (const [topic, partitions] of byTopic) {
      const positions = await this.positions(topic, partitions);
      for (const p of positions ?? []) await this.place(topic, p);
    }
  }

  private async positions(topic: string, partitions: number[]): Promise<PartitionPosition[] | undefined> {
    const positions = this.c.client.positions?.bind(this.c.client);
    if (positions === undefined || this.c.client.seek === undefined) return undefined;
    for (let attempt = 1; this.c.running(); attempt++) {
      try {
        return await positions(topic, partitions);
      } catch (error) {
        this.c.logger.warn({ err: error, topic, partitions }, 'could not read committed offsets and log bounds; retrying (the partitions stay paused)');
        await new Promise((r) => setTimeout(r, backoffMs(attempt, 200, 5000)));
      }
    }
    return undefined;
  }

  private async place(topic: string, p: PartitionPosition): Promise<void> {
    const { client, logger } = this.c;
    const end = BigInt(p.highWatermark);
    if (p.committed === null) {
      if (this.c.fromBeginning) return; // the client starts at the earliest offset
      client.seek?.(topic, p.partition, p.highWatermark);
      try {
        await client.commit([{ topic, partition: p.partition, offset: p.highWatermark }]);
        this.c.committed(topic, p.partition, end);
      } catch (error) {
        logger.warn({ err: error, topic, partition: p.partition }, 'could not commit the starting offset; the next start decides again');
      }
      logger.info({ topic, partition: p.partition, offset: p.highWatermark }, 'no committed offset: starting at the end (fromBeginning: false)');
      return;
    }
    const gap = this.outOfRange(p);
    if (gap === undefined) return;
    client.seek?.(topic, p.partition, p.logStart);
    if (!this.reported.has(`${topic}:${p.partition}`)) this.reset(topic, p.partition, gap.reason, gap.detail);
  }

  private reset(topic: string, partition: number, reason: OffsetResetReason, gap: Record<string, string>): void {
    if (reason !== 'out-of-range') this.reported.add(`${topic}:${partition}`);
    this.c.metrics.increment('offset_resets_total', { group: this.c.groupId, topic, partition, reason });
    const what =
      reason === 'below-log-start'
        ? "the group's committed offset is below the log start (records deleted before this group consumed them): resuming at the earliest available offset"
        : reason === 'past-end'
          ? "the group's committed offset is past the end of the log (log truncated or topic recreated): resuming at the earliest available offset"
          : 'the position was out of range while fetching: reset to the earliest available offset';
    this.c.logger.warn({ topic, partition, reason, ...gap }, `offset reset: ${what}`);
  }
}
