import { EffectivelyError, ErrorCodes, type Logger } from '@effectively/core';
import { sql, type Transaction } from 'kysely';
import { backoffMs } from './backoff';
import { resolveRelayOptions, type OutboxRelayOptions, type ResolvedRelayOptions } from './config';
import { createKafkajsProducer, type OutgoingMessage, type ProduceFailureKind, type ProducerClient, type TopicBatch } from './kafka-adapter';
import { LaneLeases } from './lane-leases';
import { NotifyListener } from './listener';
import { RowSends } from './tracing';
import { anyDue, deletePublished, fetchPending, lockOwnedLanes, markFailed, outboxBacklog, type OutboxRow } from './outbox-store';

/** What one claim cycle ({@link OutboxRelay.drainOnce}) did. */
export interface DrainResult {
  /** Rows acknowledged by Kafka and deleted from the outbox. */
  published: number;
  /** Rows whose attempt failed and that were backed off (not parked). */
  failed: number;
  /** Rows parked in this cycle. */
  parked: number;
  /** Rows claimed in this cycle. */
  fetched: number;
  /** Lanes held in this cycle. */
  lanes: number;
}

/** Counters since construction, also reported through `metrics`. */
export interface RelayStats {
  published: number;
  failedAttempts: number;
  parked: number;
  /** Claims that found rows. */
  batches: number;
  /** Claim cycles that ended in an error (database or Kafka unavailable); the loop retries them. */
  cycleErrors: number;
  /** Lanes held now. */
  lanes: number;
  /** Whether the LISTEN connection is up. */
  listening: boolean;
  /** Times the LISTEN connection was opened again after a loss. */
  listenerReconnects: number;
  /** Cycles started by a notification rather than the poll timer. */
  notifiedWakeups: number;
}

/** What `/healthz` reports. */
export interface RelayHealth {
  /**
   * `ok`: running, and a cycle succeeded recently; `failing`: not running, its cycles have failed
   * for longer than a lease, or none has finished for longer than `claimTimeoutMs + leaseMs` (stuck).
   */
  status: 'ok' | 'failing';
  state: 'new' | 'running' | 'stopping' | 'stopped';
  relayId: string;
  lanes: number;
  listening: boolean;
  /** When the last cycle (or rebalance) succeeded. */
  lastSuccessAt: string | null;
  lastError: string | null;
}

/** The whole cycle must be retried later (Kafka unavailable); thrown after committing what was acknowledged. */
class KafkaUnavailable extends Error {}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

function toMessage(row: OutboxRow, sends: RowSends): OutgoingMessage {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(row.headers ?? {})) headers[name] = typeof value === 'string' ? value : JSON.stringify(value);
  headers['event-id'] = row.event_id;
  return { key: row.message_key, value: row.payload, headers: sends.headers(row, headers) };
}

/** Groups rows by topic, keeping id order inside each topic (and so inside each key). */
function byTopic(rows: readonly OutboxRow[], sends: RowSends): TopicBatch[] {
  const groups = new Map<string, OutgoingMessage[]>();
  for (const row of rows) {
    let list = groups.get(row.topic);
    if (list === undefined) groups.set(row.topic, (list = []));
    list.push(toMessage(row, sends));
  }
  return [...groups].map(([topic, messages]) => ({ topic, messages }));
}

/** Bytes a row adds to a produce request, roughly (key, value, headers). */
function rowBytes(row: OutboxRow): number {
  let n = (row.message_key?.length ?? 0) + (row.payload?.length ?? 0) + row.event_id.length + 64;
  for (const [name, value] of Object.entries(row.headers ?? {})) n += name.length + (typeof value === 'string' ? value.length : JSON.stringify(value).length);
  return n;
}

/** The longest prefix of `rows` within `maxBytes` (at least one row): a prefix keeps every key's order. */
function capBytes(rows: OutboxRow[], maxBytes: number): OutboxRow[] {
  let total = 0;
  for (let i = 0; i < rows.length; i++) {
    total += rowBytes(rows[i] as OutboxRow);
    if (total > maxBytes && i > 0) return rows.slice(0, i);
  }
  return rows;
}

function keyOf(row: OutboxRow): string | undefined {
  return row.message_key === null ? undefined : `${row.topic}\u0000${row.message_key.toString('hex')}`;
}

/** What a claim did inside its transaction, and the error to raise once it is committed. */
interface ClaimOutcome {
  result: DrainResult;
  /** The claim stopped at `batchSize` or `maxBatchBytes`: rows may be left. */
  full: boolean;
  deferred?: unknown;
  lost: number[];
}

/**
 * Publishes committed outbox rows to Kafka with an idempotent producer (`acks: -1`, one request
 * in flight), each with the header `event-id` plus the row's own headers, then deletes them.
 *
 * - **Order per key.** Rows hash by key into lanes; each lane is leased to one relay at a time
 *   (several relays share the lanes) and published only inside a transaction holding the lane's
 *   row lock, in id order. Writers lock a key's lane until they commit, so ids follow commit
 *   order within a lane.
 * - **At least once to Kafka.** Rows are deleted only after Kafka acknowledged them, in the same
 *   claim transaction; a relay that dies in between publishes them again. Consumers deduplicate
 *   by `event-id` (the idempotent consumer does).
 * - **Failures.** When Kafka is unavailable nothing is counted against the rows; the cycle is
 *   retried with backoff. A row Kafka refuses (too large, unknown topic, not authorised) backs
 *   off and after `maxAttempts` is parked; later rows of its topic and key wait behind it,
 *   other keys flow. See `listParked` / `requeueParked` / `discardParked`.
 * - **Wake-up.** `LISTEN` for writers' notifications, polling every `pollIntervalMs` as the fallback.
 */
export class OutboxRelay<DB = unknown> {
  private readonly options: ResolvedRelayOptions;
  private readonly log: Logger;
  private readonly leases: LaneLeases;
  private readonly listener: NotifyListener | undefined;
  private producer: ProducerClient | undefined;
  private producerReady: Promise<void> | undefined;
  private state: RelayHealth['state'] = 'new';
  private loop: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** False while backing off after a failed cycle: writers' notifications say nothing about Kafka or the database coming back. */
  private wakeOnNotify = true;
  private notified = false;
  private exclusive: Promise<unknown> = Promise.resolve();
  private nextRebalanceAt = 0;
  private backlogCheckedAt = 0;
  private backlogInFlight = false;
  private moreDue = false;
  private lastSuccessAt: number | undefined;
  private lastError: string | undefined;
  private failingSince: number | undefined;
  private readonly counters = { published: 0, failedAttempts: 0, parked: 0, batches: 0, cycleErrors: 0, notifiedWakeups: 0 };
  private readonly labels: { schema: string };

  /** @throws InvalidConfigError / InvalidIdentifierError when the options are unsafe or inconsistent. */
  constructor(options: OutboxRelayOptions<DB>) {
    this.options = resolveRelayOptions(options);
    const o = this.options;
    this.labels = { schema: o.schema };
    this.log = o.logger.child({ component: 'outbox-relay', schema: o.schema, relayId: o.relayId });
    this.leases = new LaneLeases(o.db, o.schema, o.relayId, o.leaseMs, this.log);
    if (o.listen) {
      this.listener = new NotifyListener({
        databaseUrl: o.databaseUrl as string,
        schema: o.schema,
        applicationName: `effectively-relay-listener:${o.clientId}`.slice(0, 63),
        logger: this.log,
        onNotify: () => this.onNotify(),
        onStateChange: (listening) => o.metrics.set('relay_listener_connected', listening ? 1 : 0, this.labels),
      });
    }
  }

  /** This relay's id (its name in `outbox_lanes.owner`). */
  get relayId(): string {
    return this.options.relayId;
  }

  /** A snapshot of the counters since construction. */
  get stats(): Readonly<RelayStats> {
    return Object.freeze({
      ...this.counters,
      lanes: this.leases.owned.length,
      listening: this.listener?.listening ?? false,
      listenerReconnects: this.listener?.reconnects ?? 0,
    });
  }

  /** Liveness for `/healthz`. */
  health(): RelayHealth {
    const o = this.options;
    const now = Date.now();
    const failingTooLong = this.failingSince !== undefined && now - this.failingSince > o.leaseMs;
    // A cycle may legitimately take up to claimTimeoutMs (a slow send); longer, it is stuck.
    const stale = this.lastSuccessAt === undefined || now - this.lastSuccessAt > o.claimTimeoutMs + o.leaseMs;
    return {
      status: this.state === 'running' && !stale && !failingTooLong ? 'ok' : 'failing',
      state: this.state,
      relayId: this.options.relayId,
      lanes: this.leases.owned.length,
      listening: this.listener?.listening ?? false,
      lastSuccessAt: this.lastSuccessAt === undefined ? null : new Date(this.lastSuccessAt).toISOString(),
      lastError: this.lastError ?? null,
    };
  }

  /** Starts listening and the publish loop in the background; resolves at once. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new EffectivelyError(ErrorCodes.STOPPED, `This relay is ${this.state}; create a new OutboxRelay to start again.`);
    this.state = 'running';
    await this.listener?.start();
    this.loop = this.run();
    this.log.info({ batchSize: this.options.batchSize, pollIntervalMs: this.options.pollIntervalMs, leaseMs: this.options.leaseMs, listen: this.options.listen }, 'relay started');
  }

  /**
   * Stops: lets the cycle in flight finish (at most `shutdownTimeoutMs`), hands its lanes back so
   * other relays take them at once, and closes its connections. Safe to call more than once.
   */
  stop(): Promise<void> {
    return (this.stopping ??= this.shutdown());
  }

  /**
   * One claim: takes lanes if this relay holds none, locks its lanes, publishes up to
   * `batchSize` due rows in id order, deletes what Kafka acknowledged, records failures, commits.
   * Cycles never overlap; a call waits for the one in flight. Usable without `start()`.
   *
   * @throws when the database or the whole Kafka cluster is unavailable; nothing unacknowledged is deleted.
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

  private onNotify(): void {
    this.notified = true;
    const wake = this.wake;
    if (wake !== undefined && this.wakeOnNotify) {
      this.counters.notifiedWakeups++;
      wake();
    }
  }

  private async run(): Promise<void> {
    let errors = 0;
    while (this.state === 'running') {
      let pause: number;
      let failed = false;
      try {
        this.notified = false;
        const result = await this.drainOnce();
        errors = 0;
        this.succeeded();
        pause = result.fetched > 0 || this.notified ? 0 : this.options.pollIntervalMs;
        if (result.lanes === 0) pause = Math.max(pause, Math.min(this.options.pollIntervalMs, Math.ceil(this.options.leaseMs / 3)));
        // Idle or not, wake for the next renewal: a poll interval longer than the lease must not let the leases and heartbeat lapse.
        if (pause > 0) pause = Math.min(pause, Math.max(1, this.nextRebalanceAt - Date.now()));
      } catch (err) {
        errors++;
        this.counters.cycleErrors++;
        this.options.metrics.increment('relay_cycle_errors_total', this.labels);
        this.lastError = describe(err);
        this.failingSince ??= Date.now();
        pause = backoffMs(errors, Math.max(100, Math.min(this.options.pollIntervalMs, 1_000)), 10_000);
        failed = true;
        this.log.warn({ err, retryInMs: pause }, 'relay cycle failed; retrying (unacknowledged rows stay in the outbox)');
      }
      if (pause > 0 && this.state === 'running') await this.sleep(pause, !failed);
    }
  }

  private succeeded(): void {
    this.lastSuccessAt = Date.now();
    this.failingSince = undefined;
  }

  /** Sleeps `ms`; `stop()` always ends it early, a notification only when `wakeOnNotify` (not during an error backoff). */
  private sleep(ms: number, wakeOnNotify = true): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        this.wakeOnNotify = true;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
      this.wakeOnNotify = wakeOnNotify;
      if (wakeOnNotify && this.notified) done();
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
      if (!finished) this.log.warn({ shutdownTimeoutMs: this.options.shutdownTimeoutMs }, 'relay cycle did not finish in time; closing anyway (its rows will be published again)');
    } else {
      await this.exclusive;
    }
    this.state = 'stopped';
    await this.listener?.close();
    await this.closeProducer();
    await this.leases.releaseAll().catch((err: unknown) => this.log.warn({ err }, 'handing back lanes failed; they return to the pool when their lease runs out'));
    this.options.metrics.set('relay_lanes_owned', 0, this.labels);
    this.log.info(this.stats, 'relay stopped');
  }

  private async ensureProducer(): Promise<ProducerClient> {
    // A cycle outliving stop()'s bound must not open a producer nothing would close.
    if (this.state === 'stopped') throw new EffectivelyError(ErrorCodes.STOPPED, 'The relay was stopped during this cycle; its rows stay in the outbox.');
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
    if (Date.now() >= this.nextRebalanceAt || this.leases.owned.length === 0) {
      await this.leases.rebalance();
      this.nextRebalanceAt = Date.now() + Math.ceil(o.leaseMs / 3);
      o.metrics.set('relay_lanes_owned', this.leases.owned.length, this.labels);
    }
    this.reportBacklog();
    const lanes = [...this.leases.owned];
    const result: DrainResult = { published: 0, failed: 0, parked: 0, fetched: 0, lanes: lanes.length };
    // After a full claim more rows are likely due: claim again without the probe.
    if (lanes.length === 0 || (!this.moreDue && !(await anyDue(o.db, o.schema, lanes)))) return result;

    const outcome = await o.db.transaction().execute((trx) => this.claim(trx, lanes, result));
    this.moreDue = outcome.full;
    if (outcome.lost.length > 0) this.leases.lost(outcome.lost);
    if (outcome.deferred !== undefined) throw outcome.deferred;
    return outcome.result;
  }

  /** The claim transaction: lock lanes, read rows, send, delete what was acknowledged. */
  private async claim(trx: Transaction<unknown>, lanes: number[], result: DrainResult): Promise<ClaimOutcome> {
    const o = this.options;
    await sql`SELECT set_config('idle_in_transaction_session_timeout', ${`${o.claimTimeoutMs}ms`}, true), set_config('lock_timeout', '5s', true)`.execute(trx);
    const locked = await lockOwnedLanes(trx, o.schema, o.relayId, lanes, o.leaseMs);
    const lockedSet = new Set(locked);
    const outcome: ClaimOutcome = { result, full: false, lost: lanes.filter((l) => !lockedSet.has(l)) };
    result.lanes = locked.length;
    if (locked.length === 0) return outcome;
    const due = await fetchPending(trx, o.schema, locked, o.batchSize);
    const rows = capBytes(due, o.maxBatchBytes);
    result.fetched = rows.length;
    outcome.full = due.length === o.batchSize || rows.length < due.length;
    if (rows.length === 0) return outcome;
    this.counters.batches++;
    o.metrics.observe('relay_batch_size', rows.length, this.labels);

    const producer = await this.ensureProducer();
    const started = process.hrtime.bigint();
    let failure: unknown;
    const sends = new RowSends(rows, o.schema);
    try {
      await producer.sendBatch(byTopic(rows, sends));
    } catch (err) {
      failure = err;
    }
    o.metrics.observe('relay_send_duration_seconds', Number(process.hrtime.bigint() - started) / 1e9, this.labels);
    if (failure === undefined) {
      sends.end();
      await this.acknowledged(trx, rows, locked, result);
      return outcome;
    }
    const kind = producer.classify(failure);
    sends.end(failure, kind);
    o.metrics.increment('relay_send_errors_total', { ...this.labels, kind });
    await this.closeProducer();
    if (kind === 'unavailable') {
      outcome.deferred = new KafkaUnavailable(`Kafka is unavailable; ${rows.length} rows stay in the outbox: ${describe(failure)}`, { cause: failure });
      return outcome;
    }
    this.log.warn({ err: failure, kind, rows: rows.length }, 'batch send failed; sending its rows one at a time');
    outcome.deferred = await this.oneByOne(trx, rows, locked, result);
    return outcome;
  }

  /** Kafka acknowledged `rows`: run the hook, delete them in the claim transaction, count them. */
  private async acknowledged(trx: Transaction<unknown>, rows: readonly OutboxRow[], lanes: readonly number[], result: DrainResult): Promise<void> {
    if (rows.length === 0) return;
    const o = this.options;
    const now = Date.now();
    for (const row of rows) o.metrics.observe('relay_publish_latency_seconds', Math.max(0, now - row.created_ms) / 1000, this.labels);
    await o.hooks.afterKafkaAck?.({ eventIds: rows.map((r) => r.event_id), lanes });
    await deletePublished(trx, o.schema, rows.map((r) => r.id));
    result.published += rows.length;
    this.counters.published += rows.length;
    const perTopic = new Map<string, number>();
    for (const row of rows) perTopic.set(row.topic, (perTopic.get(row.topic) ?? 0) + 1);
    for (const [topic, n] of perTopic) o.metrics.increment('relay_published_total', { ...this.labels, topic }, n);
    if (this.log.isLevelEnabled('debug')) {
      for (const row of rows) this.log.debug({ topic: row.topic, eventId: row.event_id, outboxId: row.id, lane: row.lane }, 'outbox row published');
    }
  }

  /**
   * The fallback after a failed batch: rows in id order, one request each. Acknowledged rows are
   * deleted; a failing row is backed off or parked and later rows of its key are not sent in
   * this claim, so a key's order holds. Returns the error to raise when the cluster, not the
   * row, seems to be the problem.
   */
  private async oneByOne(trx: Transaction<unknown>, rows: readonly OutboxRow[], lanes: readonly number[], result: DrainResult): Promise<unknown> {
    const blockedKeys = new Set<string>();
    const topicErrors = new Map<string, { error: string; kind: 'unknown-topic' }>();
    const acked: OutboxRow[] = [];
    let deferred: unknown;
    try {
      for (const row of rows) {
        const key = keyOf(row);
        if (key !== undefined && blockedKeys.has(key)) continue;
        const topicError = topicErrors.get(row.topic);
        if (topicError !== undefined) {
          await this.recordFailure(trx, row, topicError.error, topicError.kind, result);
          if (key !== undefined) blockedKeys.add(key);
          continue;
        }
        const producer = await this.ensureProducer();
        const sends = new RowSends([row], this.options.schema);
        try {
          await producer.sendBatch([{ topic: row.topic, messages: [toMessage(row, sends)] }]);
          sends.end();
          acked.push(row);
          continue;
        } catch (err) {
          const kind = producer.classify(err);
          sends.end(err, kind);
          this.options.metrics.increment('relay_send_errors_total', { ...this.labels, kind });
          await this.closeProducer();
          if (kind === 'unavailable') {
            deferred = new KafkaUnavailable(`Kafka is unavailable: ${describe(err)}`, { cause: err });
            break;
          }
          if (key !== undefined) blockedKeys.add(key);
          if (kind === 'unknown-topic') topicErrors.set(row.topic, { error: describe(err), kind });
          await this.recordFailure(trx, row, describe(err), kind, result);
          if (kind === 'retriable') {
            // An unclassified failure may be the cluster's, not the row's: leave the rest for a
            // later claim and back off, so a cluster-wide error charges one row per claim, not all.
            deferred = new KafkaUnavailable(`Kafka refused a row with an unclassified error; backing off: ${describe(err)}`, { cause: err });
            break;
          }
        }
      }
    } finally {
      await this.acknowledged(trx, acked, lanes, result);
    }
    return deferred;
  }

  private async recordFailure(trx: Transaction<unknown>, row: OutboxRow, error: string, kind: Exclude<ProduceFailureKind, 'unavailable'>, result: DrainResult): Promise<void> {
    const o = this.options;
    const attempts = row.attempts + 1;
    const park = attempts >= o.maxAttempts;
    const log = { topic: row.topic, eventId: row.event_id, outboxId: row.id, lane: row.lane, attempts, maxAttempts: o.maxAttempts, reason: kind, error };
    if (park) {
      await markFailed(trx, o.schema, row.id, error, { park: true });
      result.parked++;
      this.counters.parked++;
      o.metrics.increment('relay_parked_total', { ...this.labels, topic: row.topic, reason: kind });
      this.log.error(log, 'outbox row parked: later rows of its key wait until an operator re-queues or discards it (effectively outbox parked|requeue|discard)');
    } else {
      const delayMs = backoffMs(attempts, o.retryDelayMs, o.maxRetryDelayMs);
      await markFailed(trx, o.schema, row.id, error, { park: false, delayMs });
      result.failed++;
      this.log.warn({ ...log, retryInMs: delayMs }, 'publishing an outbox row failed; retrying later (later rows of its key wait)');
    }
    this.counters.failedAttempts++;
    o.metrics.increment('relay_failed_attempts_total', { ...this.labels, topic: row.topic, reason: kind });
  }

  /**
   * Sets the backlog gauges at most every 5 s, in the background: counting a large backlog takes
   * hundreds of milliseconds and must not delay publishing.
   */
  private reportBacklog(): void {
    const now = Date.now();
    if (this.backlogInFlight || now - this.backlogCheckedAt < 5_000) return;
    this.backlogCheckedAt = now;
    this.backlogInFlight = true;
    outboxBacklog(this.options.db, this.options.schema)
      .then((backlog) => {
        this.options.metrics.set('relay_backlog_rows', backlog.pending, this.labels);
        this.options.metrics.set('relay_parked_rows', backlog.parked, this.labels);
        this.options.metrics.set('relay_oldest_pending_age_seconds', backlog.oldestPendingSeconds, this.labels);
      })
      .catch((err: unknown) => this.log.debug({ err }, 'measuring the outbox backlog failed'))
      .finally(() => (this.backlogInFlight = false));
  }
}
