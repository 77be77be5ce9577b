import { EffectivelyError, ErrorCodes, type Logger } from '@effectively/core';
import { backoffMs } from './backoff';
import { resolveRelayOptions, type OutboxRelayOptions, type ResolvedRelayOptions } from './config';
import { createKafkajsProducer, type OutgoingMessage, type ProduceFailureKind, type ProducerClient, type TopicBatch } from './kafka-adapter';
import { createAdvisoryLeaderLock, type LeaderLock } from './leader-lock';
import { fetchPending, markFailed, markPublished, pendingLagSeconds, type OutboxRow } from './outbox-store';

/** What one poll cycle ({@link OutboxRelay.drainOnce}) did. */
export interface DrainResult {
  /** Rows acknowledged by Kafka and marked published. */
  published: number;
  /** Rows whose attempt failed and that were backed off (not parked). */
  failed: number;
  /** Rows parked in this cycle. */
  parked: number;
  /** Rows read from the outbox in this cycle. */
  fetched: number;
  /** Whether this relay held the leader lock; a standby publishes nothing. */
  leader: boolean;
}

/** Counters since construction, also reported through `metrics`. */
export interface RelayStats {
  published: number;
  failedAttempts: number;
  parked: number;
  /** Cycles that found rows to publish. */
  batches: number;
  /** Whether this relay held the leader lock at its last check. */
  isLeader: boolean;
  /** How often this relay took the lock. */
  leaderAcquisitions: number;
  /** Cycles that ended in an error (database or Kafka unavailable); the loop retries them. */
  cycleErrors: number;
}

/** Thrown when the whole cycle must be retried later (Kafka unavailable), after marking what was acked. */
class KafkaUnavailable extends Error {}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

function toHeaders(row: OutboxRow): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(row.headers ?? {})) {
    headers[name] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  headers['event-id'] = row.event_id;
  return headers;
}

function toMessage(row: OutboxRow): OutgoingMessage {
  return { key: row.message_key, value: row.payload, headers: toHeaders(row) };
}

/** Groups rows by topic, keeping id order inside each topic (and so inside each key). */
function byTopic(rows: readonly OutboxRow[]): TopicBatch[] {
  const groups = new Map<string, OutgoingMessage[]>();
  for (const row of rows) {
    let list = groups.get(row.topic);
    if (list === undefined) groups.set(row.topic, (list = []));
    list.push(toMessage(row));
  }
  return [...groups].map(([topic, messages]) => ({ topic, messages }));
}

/**
 * Publishes committed outbox rows to Kafka, in id order per key, each with the header
 * `event-id` (plus the row's stored headers), then marks them published.
 *
 * - One relay per schema publishes at a time: the leader holds a Postgres advisory lock on a
 *   connection of its own; others wait on standby and take over when it goes away.
 * - Delivery to Kafka is at least once: a relay that dies after the broker acknowledged a batch
 *   but before marking it publishes those rows again on restart. Consumers deduplicate by the
 *   `event-id` header (the idempotent consumer does).
 * - A row that keeps failing backs off (`available_at`) and, after `maxAttempts` or at once for a
 *   record the broker refuses as too large, is parked (`status = 'parked'`, `last_error`); later
 *   rows of its key wait while it backs off, other keys keep flowing.
 */
export class OutboxRelay {
  private readonly options: ResolvedRelayOptions;
  private readonly log: Logger;
  private readonly lock: LeaderLock;
  private producer: ProducerClient | undefined;
  private producerReady: Promise<void> | undefined;
  private state: 'new' | 'running' | 'stopping' | 'stopped' = 'new';
  private loop: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private exclusive: Promise<unknown> = Promise.resolve();
  private lagCheckedAt = 0;
  private readonly counters: RelayStats = { published: 0, failedAttempts: 0, parked: 0, batches: 0, isLeader: false, leaderAcquisitions: 0, cycleErrors: 0 };
  private readonly labels: { schema: string };

  /** @throws InvalidConfigError / InvalidIdentifierError when the options are unsafe or inconsistent. */
  constructor(options: OutboxRelayOptions) {
    this.options = resolveRelayOptions(options);
    const o = this.options;
    this.labels = { schema: o.schema };
    this.log = o.logger.child({ component: 'outbox-relay', schema: o.schema });
    this.lock =
      o.leaderLock ??
      createAdvisoryLeaderLock({ databaseUrl: o.databaseUrl as string, schema: o.schema, applicationName: `effectively-relay-lock:${o.clientId}`.slice(0, 63), logger: this.log });
  }

  /** A snapshot of the counters since construction. */
  get stats(): Readonly<RelayStats> {
    return Object.freeze({ ...this.counters });
  }

  /**
   * Starts the poll loop in the background and resolves at once. The loop publishes while this
   * relay holds the leader lock and otherwise retries the lock every `standbyRetryMs`.
   */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new EffectivelyError(ErrorCodes.STOPPED, `This relay is ${this.state}; create a new OutboxRelay to start again.`);
    this.state = 'running';
    this.loop = this.run();
  }

  /**
   * Stops the loop: lets the in-flight cycle finish (at most `shutdownTimeoutMs`), then
   * disconnects the producer and releases the leader lock. Safe to call more than once.
   */
  stop(): Promise<void> {
    return (this.stopping ??= this.shutdown());
  }

  /**
   * Runs one poll cycle: checks (or takes) the leader lock, reads up to `batchSize` ready rows,
   * publishes them and marks the outcome. Public so tests and benchmarks can drive the relay
   * without the loop. Cycles never overlap; a call waits for the one in flight.
   *
   * @throws when the database or the whole Kafka cluster is unavailable; nothing unacknowledged is marked.
   */
  drainOnce(): Promise<DrainResult> {
    if (this.state === 'stopped') return Promise.reject(new EffectivelyError(ErrorCodes.STOPPED, 'This relay was stopped; create a new OutboxRelay to publish again.'));
    const next = this.exclusive.then(
      () => this.cycle(),
      () => this.cycle(),
    );
    this.exclusive = next.catch(() => undefined);
    return next;
  }

  private async run(): Promise<void> {
    let errors = 0;
    while (this.state === 'running') {
      let pause: number;
      try {
        const result = await this.drainOnce();
        errors = 0;
        pause = !result.leader ? this.options.standbyRetryMs : result.fetched === 0 ? this.options.pollIntervalMs : 0;
      } catch (err) {
        errors++;
        this.counters.cycleErrors++;
        pause = backoffMs(errors, Math.max(100, this.options.pollIntervalMs), 10_000);
        this.log.warn({ err, retryInMs: pause }, 'relay cycle failed; retrying (unacknowledged rows stay pending)');
      }
      if (pause > 0 && this.state === 'running') await this.sleep(pause);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private async shutdown(): Promise<void> {
    const wasRunning = this.state === 'running';
    this.state = 'stopping';
    this.wake?.();
    if (wasRunning && this.loop !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        this.loop.then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.options.shutdownTimeoutMs))),
      ]);
      clearTimeout(timer);
      if (!finished) this.log.warn({ shutdownTimeoutMs: this.options.shutdownTimeoutMs }, 'relay cycle did not finish in time; closing anyway (its unmarked rows will be published again)');
    } else {
      await this.exclusive;
    }
    this.state = 'stopped';
    await this.closeProducer();
    await this.lock.close().catch((err: unknown) => this.log.warn({ err }, 'closing the leader-lock connection failed'));
    this.setLeader(false);
    this.log.info(this.stats, 'relay stopped');
  }

  private setLeader(leader: boolean): void {
    if (leader && !this.counters.isLeader) this.counters.leaderAcquisitions++;
    this.counters.isLeader = leader;
    this.options.metrics.set('relay_leader', leader ? 1 : 0, this.labels);
  }

  private async ensureProducer(): Promise<ProducerClient> {
    if (this.producer === undefined) {
      const o = this.options;
      const producer = (o.producerClient ?? createKafkajsProducer)({ brokers: [...o.brokers], clientId: o.clientId, logger: this.log, kafka: o.kafka, producer: { ...o.producer } });
      this.producer = producer;
      this.producerReady = producer.connect();
    }
    const producer = this.producer;
    try {
      await this.producerReady;
    } catch (err) {
      await this.closeProducer();
      throw err;
    }
    return producer;
  }

  /**
   * Drops the producer after a failed send. kafkajs's idempotent producer can be left with
   * sequence numbers out of step with the broker after a partly failed request (a later batch
   * could then be taken for a duplicate and dropped); a new producer gets a new producer id.
   */
  private async closeProducer(): Promise<void> {
    const producer = this.producer;
    this.producer = undefined;
    this.producerReady = undefined;
    if (producer !== undefined) await producer.disconnect().catch((err: unknown) => this.log.debug({ err }, 'disconnecting the producer failed'));
  }

  private async cycle(): Promise<DrainResult> {
    const o = this.options;
    const leader = await this.lock.acquire();
    this.setLeader(leader);
    const result: DrainResult = { published: 0, failed: 0, parked: 0, fetched: 0, leader };
    if (!leader) return result;
    const started = process.hrtime.bigint();
    const rows = await fetchPending(o.db, o.schema, o.batchSize);
    result.fetched = rows.length;
    await this.reportLag();
    if (rows.length === 0) return result;
    this.counters.batches++;
    o.metrics.observe('relay_batch_size', rows.length, this.labels);

    const producer = await this.ensureProducer();
    let failure: unknown;
    try {
      await producer.sendBatch(byTopic(rows));
    } catch (err) {
      failure = err;
    }
    if (failure === undefined) {
      await markPublished(o.db, o.schema, rows.map((r) => r.id));
      this.countPublished(rows, result);
    } else {
      const kind = producer.classify(failure);
      await this.closeProducer();
      if (kind === 'unavailable') throw new KafkaUnavailable(`Kafka is unavailable; ${rows.length} rows stay pending: ${describe(failure)}`, { cause: failure });
      this.log.warn({ err: failure, kind, rows: rows.length }, 'batch send failed; sending its rows one at a time');
      await this.oneByOne(rows, result);
    }
    o.metrics.observe('relay_batch_duration_seconds', Number(process.hrtime.bigint() - started) / 1e9, this.labels);
    return result;
  }

  /**
   * The fallback after a failed batch: rows in id order, one request each. Acked rows are marked
   * published; a failing row is backed off or parked and later rows of its key are not sent in
   * this cycle, so a key's order holds. Stops early when the cluster seems unavailable.
   */
  private async oneByOne(rows: readonly OutboxRow[], result: DrainResult): Promise<void> {
    const o = this.options;
    const blockedKeys = new Set<string>();
    const missingTopics = new Map<string, string>();
    const acked: OutboxRow[] = [];
    let unavailable: unknown;
    try {
      for (const row of rows) {
        const key = row.message_key === null ? undefined : row.message_key.toString('hex');
        if (key !== undefined && blockedKeys.has(key)) continue;
        const topicError = missingTopics.get(row.topic);
        if (topicError !== undefined) {
          await this.recordFailure(row, topicError, 'unknown-topic', result);
          if (key !== undefined) blockedKeys.add(key);
          continue;
        }
        const producer = await this.ensureProducer();
        try {
          await producer.sendBatch([{ topic: row.topic, messages: [toMessage(row)] }]);
          acked.push(row);
          continue;
        } catch (err) {
          const kind = producer.classify(err);
          await this.closeProducer();
          if (kind === 'unavailable') {
            unavailable = err;
            break;
          }
          if (key !== undefined) blockedKeys.add(key);
          if (kind === 'unknown-topic') missingTopics.set(row.topic, describe(err));
          await this.recordFailure(row, describe(err), kind, result);
          // An unclassified failure may be the cluster's, not the row's: leave the rest for the next cycle.
          if (kind === 'retriable') break;
        }
      }
    } finally {
      await markPublished(o.db, o.schema, acked.map((r) => r.id));
      this.countPublished(acked, result);
    }
    if (unavailable !== undefined) throw new KafkaUnavailable(`Kafka is unavailable: ${describe(unavailable)}`, { cause: unavailable });
  }

  private async recordFailure(row: OutboxRow, error: string, kind: Exclude<ProduceFailureKind, 'unavailable'>, result: DrainResult): Promise<void> {
    const o = this.options;
    const attempts = row.attempts + 1;
    const park = kind === 'message-too-large' || attempts >= o.maxAttempts;
    const reason = kind;
    const lastError = kind === 'message-too-large' ? `message too large for the broker (not retried): ${error}` : error;
    if (park) {
      await markFailed(o.db, o.schema, row.id, lastError, { park: true });
      result.parked++;
      this.counters.parked++;
      o.metrics.increment('relay_parked_total', { ...this.labels, topic: row.topic, reason });
      this.log.error({ topic: row.topic, eventId: row.event_id, outboxId: row.id, attempts, reason, error },
        'outbox row parked: it will not be published until an operator sets its status back to pending; later rows of its key now flow');
    } else {
      const delayMs = backoffMs(attempts, o.retryDelayMs, o.maxRetryDelayMs);
      await markFailed(o.db, o.schema, row.id, lastError, { park: false, delayMs });
      result.failed++;
      this.log.warn({ topic: row.topic, eventId: row.event_id, outboxId: row.id, attempts, maxAttempts: o.maxAttempts, retryInMs: delayMs, reason, error }, 'publishing an outbox row failed; retrying later');
    }
    this.counters.failedAttempts++;
    o.metrics.increment('relay_failed_attempts_total', { ...this.labels, topic: row.topic, reason });
  }

  private countPublished(rows: readonly OutboxRow[], result: DrainResult): void {
    if (rows.length === 0) return;
    result.published += rows.length;
    this.counters.published += rows.length;
    const perTopic = new Map<string, number>();
    for (const row of rows) perTopic.set(row.topic, (perTopic.get(row.topic) ?? 0) + 1);
    for (const [topic, n] of perTopic) this.options.metrics.increment('relay_published_total', { ...this.labels, topic }, n);
    if (this.log.isLevelEnabled('debug')) {
      for (const row of rows) this.log.debug({ topic: row.topic, eventId: row.event_id, outboxId: row.id }, 'outbox row published');
    }
  }

  /** Sets the lag gauge (age of the oldest pending row, backing-off rows included) at most once a second. */
  private async reportLag(): Promise<void> {
    const now = Date.now();
    if (now - this.lagCheckedAt < 1_000) return;
    this.lagCheckedAt = now;
    this.options.metrics.set('relay_lag_seconds', await pendingLagSeconds(this.options.db, this.options.schema), this.labels);
  }
}
