/**
 * The fetch loop of the @platformatic/kafka consumer client. The client's `MessagesStream` has no
 * per-partition pause, so this fetches itself: per leader node one fetch at a time, over the
 * partitions of the current assignment that are positioned, not paused and not being handled;
 * each fetched partition becomes one batch, handled with at most `concurrency` batches at once
 * and one at a time per partition. A batch of an earlier assignment, or of a partition sought
 * since, is stale: its resolved offsets move nothing.
 */
import type { Logger } from '@effectively/core';
import type { Consumer, ConnectionPool } from '@platformatic/kafka';
import { backoffMs } from './backoff';
import type { FetchedBatch, SkippedRange } from './kafka-adapter';
import { readPartition, type FetchedPartitionData } from './platformatic-records';

const READ_COMMITTED = 1;
const EARLIEST = -2n;
const LATEST = -1n;
const OFFSET_OUT_OF_RANGE = 1;

/** Where one assigned partition stands in this member. */
interface PartitionState {
  topic: string;
  partition: number;
  /** Bumped by each seek: batches fetched before it are stale. */
  epoch: number;
  /** Next offset to fetch; undefined until the group's committed offset (or a seek) placed it. */
  fetchOffset: bigint | undefined;
  paused: boolean;
  /** A batch of it is being handled. */
  busy: boolean;
  /** Part of a fetch in flight. */
  inflight: boolean;
}

/** What the fetch loop needs around it. */
export interface FetcherContext {
  consumer: Consumer;
  /** Connections for fetches only, so a long poll never delays a heartbeat or commit. */
  pool: ConnectionPool;
  topics: readonly string[];
  maxWaitTimeMs: number;
  maxBytesPerPartition: number;
  /** Where a partition without a committed offset starts (and where an out-of-range position resets to). */
  fromBeginning: boolean;
  concurrency: number;
  logger: Logger;
  onBatch: (batch: FetchedBatch) => Promise<void>;
  onSkippedRange: (range: SkippedRange) => void;
  onOffsetReset: (at: { topic: string; partition: number }) => void;
  /** A fetch failed (retried here after a backoff). */
  onError: (error: Error) => void;
  /** Whether the member is in a stable group (false while it rejoins). */
  isActive: () => boolean;
}

/** The error a batch's `heartbeat()` throws once the group is rebalancing. */
export class RebalanceInProgressError extends Error {
  constructor() {
    super('The group is rebalancing: leave the batch (committed work is safe; the rest is redelivered).');
    this.name = 'RebalanceInProgressError';
  }
}

export class Fetcher {
  private states = new Map<string, PartitionState>();
  private generation = 0;
  private running = false;
  private readonly nodesInFlight = new Set<number>();
  private readonly handling = new Set<Promise<void>>();
  private readonly fetching = new Set<Promise<void>>();
  private readonly queue: Array<() => Promise<void>> = [];
  private active = 0;
  private wake: () => void = () => undefined;
  private loopDone: Promise<void> = Promise.resolve();

  constructor(private readonly c: FetcherContext) {}

  /** Starts the loop (returns at once). */
  start(): void {
    this.running = true;
    this.loopDone = this.loop();
  }

  /** Stops fetching and waits for the batches being handled. */
  async stop(): Promise<void> {
    this.running = false;
    this.queue.length = 0;
    this.wake();
    await this.loopDone;
    while (this.handling.size > 0 || this.fetching.size > 0) await Promise.allSettled([...this.handling, ...this.fetching]);
  }

  /** A new assignment: every batch of the previous one is stale from here on. */
  assign(partitions: Array<{ topic: string; partition: number }>): void {
    const generation = ++this.generation;
    this.states = new Map(partitions.map(({ topic, partition }) => [`${topic}:${partition}`, { topic, partition, epoch: 0, fetchOffset: undefined, paused: false, busy: false, inflight: false }]));
    this.queue.length = 0;
    void this.place(generation, [...this.states.values()]);
    this.wake();
  }

  /** Whether `topic`/`partition` belongs to this member's current assignment. */
  owns(topic: string, partition: number): boolean {
    return this.states.has(`${topic}:${partition}`);
  }

  pause(topic: string, partition: number): void {
    const state = this.states.get(`${topic}:${partition}`);
    if (state !== undefined) state.paused = true;
  }

  resume(topic: string, partition: number): void {
    const state = this.states.get(`${topic}:${partition}`);
    if (state === undefined) return;
    state.paused = false;
    this.wake();
  }

  seek(topic: string, partition: number, offset: string): void {
    const state = this.states.get(`${topic}:${partition}`);
    if (state === undefined) return;
    state.epoch++;
    state.fetchOffset = BigInt(offset);
    this.wake();
  }

  /** Places each partition at the group's committed offset, or (none) at the earliest or latest. */
  private async place(generation: number, states: PartitionState[]): Promise<void> {
    const current = (): boolean => this.running && generation === this.generation;
    for (let attempt = 1; current(); attempt++) {
      try {
        const unplaced = (): PartitionState[] => states.filter((s) => s.fetchOffset === undefined);
        const committed = await this.c.consumer.listCommittedOffsets({ topics: byTopic(unplaced()) });
        if (!current()) return;
        for (const s of unplaced()) {
          const offset = committed.get(s.topic)?.[s.partition];
          if (offset !== undefined && offset >= 0n) s.fetchOffset = offset;
        }
        const rest = unplaced();
        if (rest.length > 0) {
          const topics = [...new Set(rest.map((s) => s.topic))];
          const ends = await this.c.consumer.listOffsets({ topics, partitions: Object.fromEntries(byTopic(rest).map((t) => [t.topic, t.partitions])), timestamp: this.c.fromBeginning ? EARLIEST : LATEST, isolationLevel: READ_COMMITTED });
          if (!current()) return;
          for (const s of unplaced()) {
            const offset = ends.get(s.topic)?.[s.partition];
            if (offset !== undefined && offset >= 0n) s.fetchOffset = offset;
          }
        }
        this.wake();
        return;
      } catch (error) {
        this.c.logger.warn({ err: error, partitions: byTopic(states) }, 'could not read the committed offsets of the assigned partitions; retrying');
        await new Promise((r) => setTimeout(r, backoffMs(attempt, 200, 5000)));
      }
    }
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const woken = new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      try {
        await this.fetchReady();
      } catch (error) {
        this.c.onError(error instanceof Error ? error : new Error(String(error)));
      }
      // A fallback tick: metadata moves (a new leader) wake nothing.
      const tick = setTimeout(() => this.wake(), this.c.maxWaitTimeMs + 1000);
      await woken;
      clearTimeout(tick);
    }
  }

  /** Starts one fetch for each leader node that has partitions ready and no fetch in flight. */
  private async fetchReady(): Promise<void> {
    if (!this.c.isActive()) return;
    const ready = [...this.states.values()].filter((s) => s.fetchOffset !== undefined && !s.paused && !s.busy && !s.inflight);
    if (ready.length === 0) return;
    const metadata = await this.c.consumer.metadata({ topics: [...this.c.topics] });
    const byNode = new Map<number, PartitionState[]>();
    for (const s of ready) {
      const leader = metadata.topics.get(s.topic)?.partitions[s.partition]?.leader;
      if (leader === undefined || leader < 0 || this.nodesInFlight.has(leader)) continue;
      byNode.set(leader, [...(byNode.get(leader) ?? []), s]);
    }
    const ids = new Map([...metadata.topics].map(([name, t]) => [t.id, name]));
    for (const [node, states] of byNode) {
      const fetched: Promise<void> = this.fetchNode(node, states, ids).finally(() => this.fetching.delete(fetched));
      this.fetching.add(fetched);
    }
  }

  private async fetchNode(node: number, states: PartitionState[], topicNames: Map<string, string>): Promise<void> {
    const generation = this.generation;
    const requested = new Map(states.map((s) => [`${s.topic}:${s.partition}`, { state: s, epoch: s.epoch, offset: s.fetchOffset as bigint }]));
    const idOf = new Map([...topicNames].map(([id, name]) => [name, id]));
    const topics = byTopic(states).map((t) => ({
      topicId: idOf.get(t.topic) as string,
      partitions: t.partitions.map((partition) => ({
        partition,
        fetchOffset: requested.get(`${t.topic}:${partition}`)?.offset as bigint,
        partitionMaxBytes: this.c.maxBytesPerPartition,
        currentLeaderEpoch: -1,
        lastFetchedEpoch: -1,
      })),
    }));
    this.nodesInFlight.add(node);
    for (const s of states) s.inflight = true;
    try {
      const response = await this.c.consumer.fetch({ node, topics, maxWaitTime: this.c.maxWaitTimeMs, minBytes: 1, isolationLevel: READ_COMMITTED, connectionPool: this.c.pool });
      for (const topic of response.responses) {
        const name = topicNames.get(topic.topicId);
        for (const data of topic.partitions) {
          const req = name === undefined ? undefined : requested.get(`${name}:${data.partitionIndex}`);
          if (req === undefined || !this.fresh(generation, req.state, req.epoch, req.offset)) continue;
          this.take(generation, req.state, req.offset, data as FetchedPartitionData);
        }
      }
    } catch (error) {
      if (this.running && !(await this.resetOutOfRange(error, generation, requested, topicNames))) {
        this.c.onError(error instanceof Error ? error : new Error(String(error)));
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      this.nodesInFlight.delete(node);
      for (const s of states) s.inflight = false;
      this.wake();
    }
  }

  /** Whether a fetch of `state` from `offset` is still what the partition wants. */
  private fresh(generation: number, state: PartitionState, epoch: number, offset: bigint): boolean {
    return this.running && generation === this.generation && this.states.get(`${state.topic}:${state.partition}`) === state && state.epoch === epoch && state.fetchOffset === offset && !state.paused;
  }

  /** Hands a fetched partition on: a batch for the handler, or (nothing for it) a skipped range. */
  private take(generation: number, state: PartitionState, fetchOffset: bigint, data: FetchedPartitionData): void {
    const { topic, partition } = state;
    const read = readPartition(topic, partition, fetchOffset, data);
    if (read.messages.length === 0) {
      if (read.lastOffset === undefined) return;
      state.fetchOffset = read.lastOffset + 1n;
      this.c.onSkippedRange({ topic, partition, lastOffset: read.lastOffset.toString() });
      return;
    }
    const epoch = state.epoch;
    const current = (): boolean => generation === this.generation && this.states.get(`${topic}:${partition}`) === state && state.epoch === epoch;
    let resolved: bigint | undefined;
    const batch: FetchedBatch = {
      topic,
      partition,
      messages: read.messages,
      highWatermark: read.highWatermark.toString(),
      ...(read.lastOffset === undefined ? {} : { lastOffset: read.lastOffset.toString() }),
      resolveOffset: (offset) => {
        const next = BigInt(offset);
        if (current() && (resolved === undefined || next > resolved)) resolved = next;
      },
      heartbeat: () => (this.running && generation === this.generation && this.c.isActive() ? Promise.resolve() : Promise.reject(new RebalanceInProgressError())),
      isRunning: () => this.running,
      isStale: () => !current(),
    };
    state.busy = true;
    this.dispatch(async () => {
      try {
        await this.c.onBatch(batch);
      } catch (error) {
        this.c.logger.error({ err: error, topic, partition }, 'batch handling failed; its unresolved records are fetched again');
      } finally {
        state.busy = false;
        if (resolved !== undefined && current()) state.fetchOffset = resolved + 1n;
        this.wake();
      }
    });
  }

  /** Runs `work` now if fewer than `concurrency` batches are being handled, else when one ends. */
  private dispatch(work: () => Promise<void>): void {
    if (this.active >= this.c.concurrency) {
      this.queue.push(work);
      return;
    }
    this.active++;
    const done: Promise<void> = work().finally(() => {
      this.active--;
      this.handling.delete(done);
      const next = this.queue.shift();
      if (next !== undefined) this.dispatch(next);
    });
    this.handling.add(done);
  }

  /** A fetch refused as out of range: those partitions restart at the earliest offset (or latest), reported. True when it was that. */
  private async resetOutOfRange(error: unknown, generation: number, requested: Map<string, { state: PartitionState; epoch: number; offset: bigint }>, topicNames: Map<string, string>): Promise<boolean> {
    const response = (error as { response?: { responses?: Array<{ topicId: string; partitions: Array<{ partitionIndex: number; errorCode: number; logStartOffset: bigint; highWatermark: bigint }> }> } }).response;
    const out: Array<{ state: PartitionState; epoch: number; offset: bigint; logStart: bigint; end: bigint }> = [];
    for (const topic of response?.responses ?? []) {
      const name = topicNames.get(topic.topicId);
      for (const p of topic.partitions) {
        if (p.errorCode !== OFFSET_OUT_OF_RANGE || name === undefined) continue;
        const req = requested.get(`${name}:${p.partitionIndex}`);
        if (req !== undefined) out.push({ ...req, logStart: p.logStartOffset, end: p.highWatermark });
      }
    }
    if (out.length === 0) return false;
    const ends = await this.c.consumer
      .listOffsets({ topics: [...new Set(out.map((o) => o.state.topic))], timestamp: this.c.fromBeginning ? EARLIEST : LATEST, isolationLevel: READ_COMMITTED })
      .catch(() => undefined);
    for (const o of out) {
      const { topic, partition } = o.state;
      if (!this.fresh(generation, o.state, o.epoch, o.offset)) continue;
      const to = ends?.get(topic)?.[partition] ?? (this.c.fromBeginning ? o.logStart : o.end);
      if (to < 0n) continue;
      o.state.fetchOffset = to;
      this.c.logger.warn({ topic, partition, offset: o.offset.toString(), resetTo: to.toString() }, 'fetch position out of range; reset');
      this.c.onOffsetReset({ topic, partition });
    }
    return true;
  }
}

function byTopic(states: Array<{ topic: string; partition: number }>): Array<{ topic: string; partitions: number[] }> {
  const out = new Map<string, number[]>();
  for (const s of states) out.set(s.topic, [...(out.get(s.topic) ?? []), s.partition]);
  return [...out].map(([topic, partitions]) => ({ topic, partitions }));
}
