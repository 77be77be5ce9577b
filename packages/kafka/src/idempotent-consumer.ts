import { assertSchemaMigrated, childLogger, EffectivelyError, ErrorCodes, TopicNotFoundError, type Logger } from '@effectively/core';
import { backoffMs, sleepWithTicks } from './backoff';
import { PartitionTakeover } from './partition-takeover';
import { ChunkProcessor, type ChunkOutcome } from './chunk-processor';
import { resolveOptions, type IdempotentConsumerOptions, type ResolvedOptions } from './config';
import { FencedError, isTransientDatabaseError } from './errors';
import { LagReporter } from './lag';
import { zeroPartitionCounters } from './metrics';
import { startRetentionProbe } from './retention-probe';
import { startGenerationRotator } from './generation-rotator';
import { generationsEnabled } from './generations';
import { type Assignment, type ConsumerClient, type FetchedBatch, type RawMessage, type SkippedRange } from './kafka-adapter';
import { OffsetPositions } from './offset-positions';

/** Counters since start, also reported through `metrics`. */
export interface ConsumerStats {
  processed: number;
  duplicates: number;
  conflicts: number;
  deadLettered: number;
  /** Copies of dead-lettered events skipped (no new re-drive id); not in `duplicates`. */
  deadLetteredDuplicates: number;
  /** Dead-lettered events applied by a deliberate re-drive. */
  redriven: number;
  handlerRetries: number;
  transientRetries: number;
  fenced: number;
  batches: number;
}

/** How the consumer came to stop: by `stop()`, or by a signal it handled (`handleSignals`). */
export interface StopInfo {
  /** `SIGTERM`/`SIGINT` when a signal stopped it; `undefined` after a call to `stop()`. */
  signal: 'SIGTERM' | 'SIGINT' | undefined;
}

/**
 * Wraps a kafkajs consumer so every event's database effects happen exactly once per consumer
 * group. Per chunk of a partition: one Postgres transaction that claims the event ids in
 * `processed_events` and runs the handler; then, only after COMMIT, the Kafka offset commit.
 */
export class IdempotentConsumer<T = unknown, DB = unknown> {
  private readonly options: ResolvedOptions<T>;
  private readonly client: ConsumerClient;
  private readonly processor: ChunkProcessor<T>;
  private readonly log: Logger;
  private readonly committed = new Map<string, bigint>();
  private readonly pending = new Map<string, { next: bigint; hook: ChunkOutcome['hook'] }>();
  private readonly lastFlush = new Map<string, number>();
  private readonly epochs = new Map<string, string>();
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  /** When the retry of a partition's failed event is due (epoch ms). */
  private readonly retryAt = new Map<string, number>();
  /** Per partition: whether this member's epoch is recorded yet (only that partition waits for it). */
  private readonly fences = new Map<string, { ready: boolean; promise: Promise<void>; release: () => void }>();
  private generation = 0;
  private readonly takeover: PartitionTakeover;
  private readonly positions: OffsetPositions;
  private assigned = new Set<string>();
  /** Where the assigned partitions start, decided at each assignment (quick: offsets and log bounds). */
  private placed: Promise<void> = Promise.resolve();
  private retentionProbe: { stop(): void } | undefined;
  private rotator: { stop(): Promise<void> } | undefined;
  private readonly lag: LagReporter;
  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  private stopping: Promise<void> | undefined;
  private stopSignal: StopInfo['signal'];
  private resolveStopped!: (info: StopInfo) => void;
  private readonly signalHandler = (signal: NodeJS.Signals): void => {
    this.stopSignal ??= signal === 'SIGINT' ? 'SIGINT' : 'SIGTERM';
    void this.stop();
  };
  /**
   * Resolves once the consumer has stopped (open transaction finished, offsets committed,
   * disconnected), however that came about: `stop()`, or SIGTERM/SIGINT with `handleSignals`.
   * Never rejects. The consumer does not exit the process: chain your own shutdown here, e.g.
   * `consumer.stopped.then(() => server.close())`.
   */
  readonly stopped: Promise<StopInfo> = new Promise((resolve) => {
    this.resolveStopped = resolve;
  });
  readonly stats: ConsumerStats = { processed: 0, duplicates: 0, conflicts: 0, deadLettered: 0, deadLetteredDuplicates: 0, redriven: 0, handlerRetries: 0, transientRetries: 0, fenced: 0, batches: 0 };

  /** @throws InvalidConfigError / InvalidIdentifierError when the options are unsafe or inconsistent. */
  constructor(options: IdempotentConsumerOptions<T, DB>) {
    this.options = resolveOptions(options);
    const o = this.options;
    this.log = childLogger(o.logger, { group: o.groupId });
    this.processor = new ChunkProcessor(o);
    this.takeover = new PartitionTakeover(o.db, this.processor.processedEvents, this.processor.side, this.log);
    this.lag = new LagReporter(o.metrics, o.groupId);
    this.client = o.client({
      brokers: o.brokers,
      clientId: o.clientId,
      groupId: o.groupId,
      sessionTimeoutMs: o.sessionTimeoutMs,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      rebalanceTimeoutMs: o.rebalanceTimeoutMs,
      maxBytesPerPartition: o.maxBytesPerPartition,
      maxWaitTimeMs: o.fetchMaxWaitMs,
      logger: o.logger,
      kafka: o.kafka,
      platformatic: o.platformatic,
    });
    this.positions = new OffsetPositions({
      client: this.client,
      groupId: o.groupId,
      fromBeginning: o.fromBeginning,
      logger: this.log,
      metrics: o.metrics,
      running: () => this.state === 'running',
      committed: (topic, partition, offset) => this.committed.set(`${topic}:${partition}`, offset),
    });
  }

  /**
   * Checks the schema, connects, subscribes and starts consuming. Resolves once fetching has started.
   *
   * @throws SchemaNotMigratedError when `schema` lacks any migration of this version (nothing is consumed).
   * @throws SchemaNewerThanLibraryError when a newer version migrated `schema` (nothing is consumed).
   * @throws TopicNotFoundError when a subscribed topic does not exist (nothing is consumed).
   * When `start()` rejects, everything it opened is closed again and `stopped` resolves.
   */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new EffectivelyError(ErrorCodes.STOPPED, 'An IdempotentConsumer can be started once; create a new one to start again.');
    this.state = 'running';
    try {
      await assertSchemaMigrated(this.options.db, this.options.schema);
      if (await generationsEnabled(this.options.db, this.options.schema)) this.processor.useGenerations();
    } catch (error) {
      this.state = 'stopped';
      this.stopping = Promise.resolve();
      this.resolveStopped({ signal: undefined });
      throw error;
    }
    // Taken before any chunk transaction can hold the pool.
    await this.processor.side.open();
    try {
      await this.connectAndRun();
    } catch (error) {
      await this.abandonStart(error);
      throw error;
    }
  }

  private async connectAndRun(): Promise<void> {
    this.client.onAssignment((assignment) => {
      for (const { topic, partition } of assignment.partitions) zeroPartitionCounters(this.options.metrics, { group: this.options.groupId, topic, partition });
      this.lag.assigned(assignment.partitions);
      this.assigned = new Set(assignment.partitions.map((p) => `${p.topic}:${p.partition}`));
      this.placed = this.positions.assigned(assignment);
      this.processor.forgetRuns();
      this.takePartitions(assignment);
    });
    this.client.onSkippedRange?.((range) => void this.settleSkipped(range));
    this.client.onCrash((error, willRestart) => this.log.error({ err: error, willRestart }, 'Kafka consumer crashed'));
    if (this.options.handleSignals) {
      process.once('SIGTERM', this.signalHandler);
      process.once('SIGINT', this.signalHandler);
    }
    await this.client.connect();
    const missing = (await this.client.missingTopics?.([...this.options.topics])) ?? [];
    if (missing.length > 0) throw new TopicNotFoundError(missing);
    await this.positions.beforeJoin(this.options.topics);
    // Always earliest for the client's own out-of-range resets; `fromBeginning` is applied per partition by OffsetPositions.
    await this.client.subscribe(this.options.topics, true);
    await this.client.run((batch) => this.onBatch(batch), this.options.partitionsConsumedConcurrently);
    const o = this.options;
    this.rotator = startGenerationRotator({ db: o.db, schema: o.schema, groupId: o.groupId, metrics: o.metrics, logger: this.log, rotate: o.rotateGenerations, active: () => this.processor.onGenerations });
    this.retentionProbe = startRetentionProbe({ db: o.db, schema: o.schema, groupId: o.groupId, topics: o.topics, client: this.client, metrics: o.metrics, logger: this.log, intervalMs: 60_000 });
    this.log.info({ topics: this.options.topics, mode: this.options.mode, batchSize: this.options.batchSize }, 'idempotent consumer started');
  }

  /** Closes what a failed `start()` opened; `stop()` afterwards does nothing. */
  private async abandonStart(error: unknown): Promise<void> {
    this.state = 'stopped';
    this.stopping = Promise.resolve();
    process.removeListener('SIGTERM', this.signalHandler);
    process.removeListener('SIGINT', this.signalHandler);
    this.processor.side.close();
    await this.client.disconnect().catch((e: unknown) => this.log.warn({ err: e }, 'error while disconnecting after a failed start'));
    this.log.error({ err: error, topics: this.options.topics }, 'idempotent consumer could not start');
    this.resolveStopped({ signal: undefined });
  }

  /**
   * Stops fetching, lets the open transaction finish (or roll back), commits offsets of
   * committed work, and disconnects — within `shutdownTimeoutMs`. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.state = 'stopping';
    process.removeListener('SIGTERM', this.signalHandler);
    process.removeListener('SIGINT', this.signalHandler);
    for (const t of this.retryTimers) clearTimeout(t);
    this.retentionProbe?.stop();
    await this.rotator?.stop();
    const bounded = <R>(p: Promise<R>): Promise<R | undefined> =>
      Promise.race([p, new Promise<undefined>((r) => setTimeout(() => r(undefined), this.options.shutdownTimeoutMs).unref())]);
    let drained = false;
    try {
      await bounded(this.client.stop().then(() => (drained = true)));
    } catch (error) {
      drained = true;
      this.log.warn({ err: error }, 'error while stopping the consumer');
    }
    // Work still open after shutdownTimeoutMs is given up: its connection is ended, so nothing of it commits after stop().
    if (!drained) await this.processor.abandonAll('the consumer stopped');
    this.processor.side.close();
    await bounded(this.client.disconnect()).catch((error: unknown) => this.log.warn({ err: error }, 'error while disconnecting'));
    this.state = 'stopped';
    this.log.info({ stats: this.stats, signal: this.stopSignal }, 'idempotent consumer stopped');
    this.resolveStopped({ signal: this.stopSignal });
  }

  /**
   * Records this member's epoch for each assigned partition. Partitions no transaction holds are
   * taken at once, one statement each; a partition still held by the previous owner's open
   * transaction (a frozen or slow member) is taken afterwards, waiting at most
   * `takeoverTimeoutMs` before that session is ended. Each partition waits only for its own
   * epoch; the others are processed meanwhile.
   */
  private takePartitions(assignment: Assignment): void {
    if (!this.options.fencing) return;
    const generation = ++this.generation;
    const current = (): boolean => this.state === 'running' && generation === this.generation;
    // Partitions set aside waiting for an earlier assignment's epoch are taken back (a batch
    // fetched now waits for this assignment's epoch in turn), so none stays paused for good.
    for (const fence of this.fences.values()) fence.release();
    this.fences.clear();
    const waiting = assignment.partitions.map(({ topic, partition }) => {
      let resolve: () => void = () => undefined;
      const fence = { ready: false, promise: new Promise<void>((r) => (resolve = r)), release: () => resolve() };
      this.fences.set(`${topic}:${partition}`, fence);
      const ready = (epoch: string): void => {
        if (!current()) return;
        this.epochs.set(`${topic}:${partition}`, epoch);
        fence.ready = true;
        resolve();
      };
      return { topic, partition, ready };
    });
    void (async () => {
      const held: typeof waiting = [];
      for (const p of waiting) {
        const epoch = await this.retrying(p.topic, p.partition, current, () => this.takeover.tryTake(p.topic, p.partition, assignment.memberId));
        if (!current()) return;
        if (epoch === undefined) held.push(p);
        else p.ready(epoch);
      }
      for (const p of held) {
        this.log.warn({ topic: p.topic, partition: p.partition, takeoverTimeoutMs: this.options.takeoverTimeoutMs }, 'partition still held by a transaction of its previous owner; waiting for it');
        const epoch = await this.retrying(p.topic, p.partition, current, () => this.takeover.take(p.topic, p.partition, assignment.memberId, this.options.takeoverTimeoutMs));
        if (!current()) return;
        if (epoch !== undefined) p.ready(epoch);
      }
    })();
  }

  /** Runs `take` until it succeeds or the assignment is superseded; undefined when `take` says the partition is held. */
  private async retrying(topic: string, partition: number, current: () => boolean, take: () => Promise<string | undefined>): Promise<string | undefined> {
    for (let attempt = 1; current(); attempt++) {
      try {
        return await take();
      } catch (error) {
        this.log.warn({ err: error, topic, partition }, 'could not record partition ownership; retrying');
        await new Promise((r) => setTimeout(r, backoffMs(attempt, 200, 5000)));
      }
    }
    return undefined;
  }

  private async onBatch(batch: FetchedBatch): Promise<void> {
    await this.placed;
    const fence = this.fences.get(`${batch.topic}:${batch.partition}`);
    if (fence !== undefined && !fence.ready) {
      // Not ours in Postgres yet: set this partition aside (the others keep flowing) until it is.
      this.client.pause(batch.topic, batch.partition);
      void fence.promise.then(() => {
        if (this.state === 'running') this.client.resume(batch.topic, batch.partition);
      });
      return;
    }
    try {
      // A finished batch clears the record of its last run (see ChunkProcessor.finishRun); in
      // per-event mode a batch left before its end forgets its run (see ChunkProcessor.leaveRun).
      if (await this.processBatch(batch)) await this.processor.finishRun(batch.topic, batch.partition);
      else if (this.options.mode === 'event') await this.processor.leaveRun(batch.topic, batch.partition);
    } finally {
      // A claim made ahead for a message this batch no longer runs is rolled back.
      await this.processor.discardParked(batch.topic, batch.partition);
      await this.flushOffset(batch);
    }
  }

  /** @returns whether every message of the batch was settled (false: left before its end, or waiting for a retry) */
  private async processBatch(batch: FetchedBatch): Promise<boolean> {
    const o = this.options;
    const key = `${batch.topic}:${batch.partition}`;
    const live = (): boolean => this.state === 'running' && batch.isRunning() && !batch.isStale();
    this.lag.report(batch.topic, batch.partition, batch.highWatermark, batch.messages[0]?.offset);
    let remaining = batch.messages;
    while (remaining.length > 0 && live()) {
      if (!(await this.waitForRetry(key, batch, live))) return false;
      const chunk = remaining.slice(0, o.batchSize);
      // Per-event mode: the next message, whose claim may travel with this one's COMMIT (see ChunkProcessor.run).
      const next = o.mode === 'event' ? remaining[chunk.length] : undefined;
      const outcome = await this.runWithTransientRetry(chunk, key, batch, live, batch.messages[batch.messages.length - 1]?.offset, next);
      if (outcome === undefined) return false;
      this.record(outcome, chunk.length, key);
      if (outcome.settled > 0) {
        this.lag.report(batch.topic, batch.partition, batch.highWatermark, BigInt((chunk[outcome.settled - 1] as RawMessage).offset) + 1n);
        await this.settle(batch, chunk[outcome.settled - 1] as RawMessage, outcome);
      }
      remaining = remaining.slice(outcome.settled);
      if (!(await this.heartbeat(batch))) return false;
      if (outcome.failed !== undefined) {
        this.stats.handlerRetries++;
        o.metrics.increment('retries_total', { group: o.groupId, topic: batch.topic, partition: batch.partition, kind: 'handler' });
        const delay = outcome.failed.exhausted ? 0 : Math.min(o.maxRetryDelayMs, o.retryDelayMs * 2 ** (outcome.failed.attempt - 1));
        const due = outcome.failed.at + delay;
        this.retryAt.set(key, due);
        // Long delays: set the partition aside so the others flow, and take it back early enough
        // that its next fetch arrives before the retry is due (then wait out the rest here).
        const lead = o.fetchMaxWaitMs + 250;
        if (due - Date.now() > lead) {
          this.pauseFor(batch.topic, batch.partition, due - Date.now() - lead);
          return false;
        }
      }
    }
    if (remaining.length === 0 && live()) this.settleTail(batch);
    return remaining.length === 0;
  }

  /**
   * Every message of the batch is settled: what follows the last one up to the end of the
   * fetch (transaction markers, records of aborted transactions) is done too, so the committed
   * offset reaches the high watermark.
   */
  private settleTail(batch: FetchedBatch): void {
    const last = batch.messages[batch.messages.length - 1];
    if (last === undefined || batch.lastOffset === undefined || !/^\d+$/.test(batch.lastOffset) || BigInt(batch.lastOffset) <= BigInt(last.offset)) return;
    const key = `${batch.topic}:${batch.partition}`;
    batch.resolveOffset(batch.lastOffset);
    const hook = this.pending.get(key)?.hook ?? { topic: batch.topic, partition: batch.partition, firstOffset: last.offset, lastOffset: batch.lastOffset, claimed: [] };
    this.pending.set(key, { next: BigInt(batch.lastOffset) + 1n, hook });
  }

  /**
   * A fetch with nothing for the handler (only transaction markers or aborted records): the
   * client fetched it from the position after everything settled, so it is done; commit past it.
   */
  private async settleSkipped(range: SkippedRange): Promise<void> {
    const key = `${range.topic}:${range.partition}`;
    if (this.state !== 'running' || !this.assigned.has(key) || !/^\d+$/.test(range.lastOffset)) return;
    const next = BigInt(range.lastOffset) + 1n;
    if (next <= (this.pending.get(key)?.next ?? -1n)) return;
    this.pending.set(key, { next, hook: { topic: range.topic, partition: range.partition, firstOffset: range.lastOffset, lastOffset: range.lastOffset, claimed: [] } });
    await this.flushOffset({ topic: range.topic, partition: range.partition, isStale: () => !this.assigned.has(key) });
  }

  /** Waits (heartbeating) until the partition's pending retry is due; false when the batch is no longer ours to work on. */
  private async waitForRetry(key: string, batch: FetchedBatch, live: () => boolean): Promise<boolean> {
    const due = this.retryAt.get(key);
    if (due === undefined) return true;
    this.retryAt.delete(key);
    let rebalancing = false;
    await sleepWithTicks(
      due - Date.now(),
      Math.max(100, Math.floor(this.options.heartbeatIntervalMs / 2)),
      async () => {
        rebalancing = !(await this.heartbeat(batch));
      },
      () => !live() || rebalancing,
    );
    return live() && !rebalancing;
  }

  /** Runs one chunk, retrying transient database errors with backoff (heartbeating meanwhile). */
  private async runWithTransientRetry(chunk: RawMessage[], key: string, batch: FetchedBatch, live: () => boolean, fetchedLast: string | undefined, next?: RawMessage): Promise<ChunkOutcome | undefined> {
    const o = this.options;
    for (let attempt = 1; ; attempt++) {
      const started = process.hrtime.bigint();
      try {
        const outcome = await this.processor.run(chunk, o.fencing ? this.epochs.get(key) : undefined, fetchedLast, live() ? next : undefined);
        o.metrics.observe('batch_duration_seconds', Number(process.hrtime.bigint() - started) / 1e9, { group: o.groupId });
        return outcome;
      } catch (error) {
        if (error instanceof FencedError) {
          this.stats.fenced++;
          o.metrics.increment('fenced_total', { group: o.groupId, topic: batch.topic, partition: batch.partition });
          this.log.warn({ topic: batch.topic, partition: batch.partition }, error.message);
          return undefined;
        }
        if (!live()) return undefined;
        if (!isTransientDatabaseError(error)) {
          // A failure outside any handler (e.g. a hook, or the outbox refusing a message): retry it like a transient one, loudly.
          this.log.error({ err: error, topic: batch.topic, partition: batch.partition, firstOffset: chunk[0]?.offset }, 'chunk transaction failed; retrying');
        } else {
          this.log.warn({ err: error, topic: batch.topic, partition: batch.partition, attempt }, 'transient database error; retrying the transaction');
        }
        this.stats.transientRetries++;
        o.metrics.increment('retries_total', { group: o.groupId, topic: batch.topic, partition: batch.partition, kind: 'transient' });
        let rebalancing = false;
        await sleepWithTicks(
          backoffMs(attempt, 100, 5000),
          Math.max(500, Math.floor(o.heartbeatIntervalMs / 2)),
          async () => {
            rebalancing = !(await this.heartbeat(batch));
          },
          () => !live() || rebalancing,
        );
        if (!live() || rebalancing) return undefined;
      }
    }
  }

  /**
   * Heartbeats between chunks. A failed heartbeat means the group is rebalancing (or the
   * member was fenced out): stop working on this batch so the member can rejoin promptly;
   * committed work is safe and the rest is redelivered.
   */
  private async heartbeat(batch: FetchedBatch): Promise<boolean> {
    try {
      await batch.heartbeat();
      return true;
    } catch (error) {
      this.log.info({ topic: batch.topic, partition: batch.partition, reason: error instanceof Error ? error.message : String(error) }, 'heartbeat refused (rebalance); leaving the batch to rejoin');
      return false;
    }
  }

  private record(outcome: ChunkOutcome, size: number, key: string): void {
    const o = this.options;
    const [topic, partition] = [outcome.hook.topic, outcome.hook.partition];
    const labels = { group: o.groupId, topic, partition };
    this.stats.batches++;
    this.stats.processed += outcome.processed;
    this.stats.duplicates += outcome.duplicates;
    this.stats.conflicts += outcome.conflicts;
    this.stats.deadLettered += outcome.deadLettered;
    this.stats.deadLetteredDuplicates += outcome.deadLetteredDuplicates;
    this.stats.redriven += outcome.redriven;
    if (outcome.deadLetteredDuplicates > 0) o.metrics.increment('events_duplicate_dead_lettered_total', labels, outcome.deadLetteredDuplicates);
    if (outcome.redriven > 0) o.metrics.increment('events_redriven_total', labels, outcome.redriven);
    if (outcome.processed > 0) o.metrics.increment('events_processed_total', labels, outcome.processed);
    if (outcome.duplicates > 0) o.metrics.increment('events_duplicate_total', labels, outcome.duplicates);
    if (outcome.conflicts > 0) o.metrics.increment('events_conflict_total', labels, outcome.conflicts);
    if (outcome.deadLettered > 0) o.metrics.increment('events_dead_lettered_total', { ...labels, reason: 'any' }, outcome.deadLettered);
    o.metrics.observe('batch_size', size, { group: o.groupId });
    const seen = this.stats.processed + this.stats.duplicates + this.stats.deadLettered;
    if (seen > 0) o.metrics.set('dedup_hit_ratio', this.stats.duplicates / seen, { group: o.groupId });
    this.log.debug({ key, ...outcome.hook, processed: outcome.processed, duplicates: outcome.duplicates }, 'chunk committed');
  }

  /**
   * After COMMIT: resolve the offset locally and remember it as committable. The Kafka commit
   * itself ({@link flushOffset}) happens at the end of the fetched batch, or sooner once
   * `offsetCommitIntervalMs` has passed: always after the database commit, never per event
   * (a Kafka round trip per event would cost more than the transaction). Committing later is
   * safe: whatever is redelivered is skipped as a duplicate.
   */
  private async settle(batch: FetchedBatch, last: RawMessage, outcome: ChunkOutcome): Promise<void> {
    batch.resolveOffset(last.offset);
    await this.options.hooks.afterDbCommit?.(outcome.hook);
    this.pending.set(`${batch.topic}:${batch.partition}`, { next: BigInt(last.offset) + 1n, hook: outcome.hook });
    const lastFlush = this.lastFlush.get(`${batch.topic}:${batch.partition}`) ?? 0;
    if (Date.now() - lastFlush >= this.options.offsetCommitIntervalMs) await this.flushOffset(batch);
  }

  /** Commits offset+1 of the last settled event to Kafka, if the partition is still ours and it moves forward. */
  private async flushOffset(batch: Pick<FetchedBatch, 'topic' | 'partition' | 'isStale'>): Promise<void> {
    const o = this.options;
    const key = `${batch.topic}:${batch.partition}`;
    const pending = this.pending.get(key);
    if (pending === undefined) return;
    this.pending.delete(key);
    this.lastFlush.set(key, Date.now());
    if (batch.isStale()) {
      this.log.info({ topic: batch.topic, partition: batch.partition }, 'partition revoked; not committing its offset (the next owner will skip what is done)');
      return;
    }
    const next = pending.next;
    const previous = this.committed.get(key);
    if (previous !== undefined && next <= previous) return;
    try {
      await this.client.commit([{ topic: batch.topic, partition: batch.partition, offset: next.toString() }]);
      this.committed.set(key, next);
      await o.hooks.afterOffsetCommit?.({ ...pending.hook, committedOffset: next.toString() });
    } catch (error) {
      // The work is committed in Postgres; if this commit is lost, redelivery is skipped as duplicates.
      this.log.warn({ err: error, topic: batch.topic, partition: batch.partition, offset: next.toString() }, 'offset commit failed; redelivered events will be skipped as duplicates');
    }
  }

  private pauseFor(topic: string, partition: number, ms: number): void {
    this.client.pause(topic, partition);
    const timer = setTimeout(() => {
      this.retryTimers.delete(timer);
      if (this.state === 'running') this.client.resume(topic, partition);
    }, ms);
    this.retryTimers.add(timer);
  }
}
