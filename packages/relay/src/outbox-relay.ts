import { childLogger, EffectivelyError, ErrorCodes, type Logger } from '@effectively/core';
import type { Transaction } from 'kysely';
import { backoffMs } from './backoff';
import { resolveRelayOptions, type OutboxRelayOptions, type ResolvedRelayOptions } from './config';
import { TOPIC_FAILURES, type OutgoingMessage, type ProduceFailureKind, type ProducerClient } from './kafka-adapter';
import { LaneLeases } from './lane-leases';
import { NotifyListener } from './listener';
import { ZeroedCounters } from './metrics';
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

/** What `/healthz` (= `/readyz`) and `/livez` report. */
export interface RelayHealth {
  /** `ok` when {@link RelayHealth.ready}, else `failing`. */
  status: 'ok' | 'failing';
  /**
   * Can deliver now: running, Kafka answered this relay (a send acknowledged, its connection, or
   * when idle a metadata round trip at least every `leaseMs / 3`) and has not failed it since,
   * and its last cycle succeeded. False from the first cycle that could not reach Kafka (the
   * relay then hands its lanes back and takes none until Kafka answers again) or failed on the
   * database, and while stuck.
   */
  ready: boolean;
  /** The publish loop runs: a cycle (successful or not) ended within `claimTimeoutMs + leaseMs`. */
  live: boolean;
  state: 'new' | 'running' | 'stopping' | 'stopped';
  relayId: string;
  lanes: number;
  listening: boolean;
  /** When the last cycle succeeded (it reached Kafka or found nothing to send while Kafka answered). */
  lastSuccessAt: string | null;
  /** When Kafka last answered this relay (acknowledged a send, accepted its connection, answered a ping). */
  kafkaAnsweredAt: string | null;
  lastError: string | null;
}

/**
 * Kafka did not answer this relay (connection, send or ping failed as a whole); thrown after
 * committing what was acknowledged. The relay hands its lanes back until Kafka answers again.
 */
class KafkaUnavailable extends Error {}

/** A send, connection or ping outlived `sendTimeoutMs`; classified `unavailable`. */
class KafkaSendTimeout extends Error {
  override name = 'KafkaSendTimeout';
}

/** One topic's share of a claim, sent as one request, and how it went. */
interface TopicSend {
  topic: string;
  rows: OutboxRow[];
  error?: unknown;
  kind?: ProduceFailureKind;
}

/** What the one-row-at-a-time fallback did. */
interface FallbackResult {
  acked: OutboxRow[];
  /** Rows were left untried (time budget spent, or an unclassified error): claim again soon. */
  left: boolean;
  deferred?: KafkaUnavailable;
}

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
function byTopic(rows: readonly OutboxRow[]): Map<string, OutboxRow[]> {
  const groups = new Map<string, OutboxRow[]>();
  for (const row of rows) {
    let list = groups.get(row.topic);
    if (list === undefined) groups.set(row.topic, (list = []));
    list.push(row);
  }
  return groups;
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

/** `lanes` dealt round-robin into at most `n` non-empty sets. */
function splitLanes(lanes: readonly number[], n: number): number[][] {
  const sets: number[][] = Array.from({ length: Math.min(n, lanes.length) }, () => []);
  lanes.forEach((lane, i) => sets[i % sets.length]?.push(lane));
  return sets;
}

function keyOf(row: OutboxRow): string | undefined {
  return row.message_key === null ? undefined : `${row.topic}\u0000${row.message_key.toString('hex')}`;
}

/** Most batches one claim sends back to back (each read while the one before is in flight). */
const PIPELINE_MAX_BATCHES = 8;
/** No further batch is read once a claim has run this long (or a quarter of `leaseMs`, if shorter). */
const PIPELINE_MAX_MS = 1_000;

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
 * - **Failures.** The relay owns retrying: a send (kafkajs retrying once, briefly) is bounded by
 *   `sendTimeoutMs`. Each topic of a claim is sent as its own request and settles on its own. A
 *   row Kafka refuses (unknown topic, not authorised, too large, invalid record) backs off at
 *   once and after `maxAttempts` is parked; a row whose partition is unavailable backs off and
 *   is never parked; later rows of its topic and key wait behind it, other keys flow. When Kafka
 *   does not answer at all nothing is counted against the rows: the relay hands its lanes back,
 *   reports not ready and retries with backoff. See `listParked` / `requeueParked` / `discardParked`.
 * - **Wake-up.** `LISTEN` for writers' notifications, polling every `pollIntervalMs` as the fallback.
 */
export class OutboxRelay<DB = unknown> {
  private readonly options: ResolvedRelayOptions;
  private readonly log: Logger;
  private readonly leases: LaneLeases;
  private readonly listener: NotifyListener | undefined;
  /** One producer per claim slot (`parallelClaims`): each has its own producer id and sequence numbers. */
  private readonly producers: Array<{ client: ProducerClient; ready: Promise<void> } | undefined> = [];
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
  private lastCycleEndedAt: number | undefined;
  private startedAt = Date.now();
  private lastError: string | undefined;
  private failingSince: number | undefined;
  /** Kafka answered and has not failed since; lanes are leased only while true. */
  private kafkaReady = false;
  private kafkaAnsweredAt: number | undefined;
  private readonly counters = { published: 0, failedAttempts: 0, parked: 0, batches: 0, cycleErrors: 0, notifiedWakeups: 0 };
  private readonly labels: { schema: string };
  private readonly zeroed: ZeroedCounters;

  /** @throws InvalidConfigError / InvalidIdentifierError when the options are unsafe or inconsistent. */
  constructor(options: OutboxRelayOptions<DB>) {
    this.options = resolveRelayOptions(options);
    const o = this.options;
    this.labels = { schema: o.schema };
    this.zeroed = new ZeroedCounters(o.metrics, this.labels);
    this.log = childLogger(o.logger, { component: 'outbox-relay', schema: o.schema, relayId: o.relayId });
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

  /** Readiness (`/healthz`, `/readyz`) and liveness (`/livez`); see {@link RelayHealth}. */
  health(): RelayHealth {
    const o = this.options;
    const now = Date.now();
    // A cycle may legitimately take up to claimTimeoutMs (a slow claim); longer, the loop is stuck.
    const live = this.state === 'running' && now - (this.lastCycleEndedAt ?? this.startedAt) <= o.claimTimeoutMs + o.leaseMs;
    const ready = live && this.kafkaReady && this.failingSince === undefined && this.lastSuccessAt !== undefined;
    const iso = (t: number | undefined): string | null => (t === undefined ? null : new Date(t).toISOString());
    return {
      status: ready ? 'ok' : 'failing',
      ready,
      live,
      state: this.state,
      relayId: this.options.relayId,
      lanes: this.leases.owned.length,
      listening: this.listener?.listening ?? false,
      lastSuccessAt: iso(this.lastSuccessAt),
      kafkaAnsweredAt: iso(this.kafkaAnsweredAt),
      lastError: this.lastError ?? null,
    };
  }

  /** Starts listening and the publish loop in the background; resolves at once. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new EffectivelyError(ErrorCodes.STOPPED, `This relay is ${this.state}; create a new OutboxRelay to start again.`);
    this.state = 'running';
    this.startedAt = Date.now();
    await this.listener?.start();
    this.loop = this.run();
    this.log.info({ client: this.options.clientName, batchSize: this.options.batchSize, pollIntervalMs: this.options.pollIntervalMs, leaseMs: this.options.leaseMs, listen: this.options.listen }, 'relay started');
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
        this.lastCycleEndedAt = Date.now();
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
    this.lastSuccessAt = this.lastCycleEndedAt = Date.now();
    this.failingSince = undefined;
  }

  private kafkaAnswered(): void {
    this.kafkaReady = true;
    this.kafkaAnsweredAt = Date.now();
  }

  /** `promise`, or a {@link KafkaSendTimeout} after `sendTimeoutMs` (the abandoned promise's outcome is ignored). */
  private bounded<T>(promise: Promise<T>, what: string): Promise<T> {
    const ms = this.options.sendTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    promise.catch(() => undefined);
    return Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new KafkaSendTimeout(`Kafka ${what} took longer than sendTimeoutMs (${ms} ms)`)), ms))),
    ]).finally(() => clearTimeout(timer));
  }

  /**
   * Kafka did not answer: drop the producer, hand every lane back and leave the relays' roll
   * (another relay takes the lanes at once), and take none until Kafka answers again.
   */
  private async kafkaLost(): Promise<void> {
    this.kafkaReady = false;
    await this.closeProducers();
    if (this.state === 'stopped') return;
    await this.leases.releaseAll().catch((err: unknown) => this.log.warn({ err }, 'handing back lanes failed; they return to the pool when their lease runs out'));
    this.nextRebalanceAt = 0;
    this.options.metrics.set('relay_lanes_owned', 0, this.labels);
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
    await this.closeProducers();
    await this.leases.releaseAll().catch((err: unknown) => this.log.warn({ err }, 'handing back lanes failed; they return to the pool when their lease runs out'));
    this.options.metrics.set('relay_lanes_owned', 0, this.labels);
    this.log.info(this.stats, 'relay stopped');
  }

  /**
   * The connected producer of claim slot `slot`, connecting (bounded by `sendTimeoutMs`) when there is none.
   * @throws KafkaUnavailable when Kafka does not answer.
   */
  private async ensureProducer(slot = 0): Promise<ProducerClient> {
    // A cycle outliving stop()'s bound must not open a producer nothing would close.
    if (this.state === 'stopped') throw new EffectivelyError(ErrorCodes.STOPPED, 'The relay was stopped during this cycle; its rows stay in the outbox.');
    let entry = this.producers[slot];
    if (entry === undefined) {
      const o = this.options;
      const client = o.producerClient({ brokers: [...o.brokers], clientId: o.clientId, logger: childLogger(o.logger, { schema: o.schema, relayId: o.relayId }), kafka: o.kafka, producer: { ...o.producer }, platformatic: { ...o.platformatic } });
      entry = { client, ready: this.bounded(client.connect(), 'connection').then(() => this.kafkaAnswered()) };
      this.producers[slot] = entry;
    }
    try {
      await entry.ready;
    } catch (err) {
      await this.closeProducer(slot);
      throw new KafkaUnavailable(`Kafka did not answer (brokers ${this.options.brokers.join(',')}): ${describe(err)}`, { cause: err });
    }
    return entry.client;
  }

  /** Whether Kafka answers at all: a fresh connection (after a send failed as unavailable). */
  private async kafkaAnswers(slot: number): Promise<boolean> {
    await this.closeProducer(slot);
    try {
      await this.ensureProducer(slot);
      return true;
    } catch (err) {
      if (err instanceof KafkaUnavailable) return false;
      throw err;
    }
  }

  /** When idle: a metadata round trip if Kafka has not answered for `leaseMs / 3`, so an idle relay's health stays true. */
  private async pingIfIdle(): Promise<void> {
    if (Date.now() - (this.kafkaAnsweredAt ?? 0) < this.options.leaseMs / 3) return;
    const producer = await this.ensureProducer();
    if (producer.ping === undefined) return;
    try {
      await this.bounded(producer.ping(), 'ping');
      this.kafkaAnswered();
    } catch (err) {
      throw new KafkaUnavailable(`Kafka did not answer a ping: ${describe(err)}`, { cause: err });
    }
  }

  /**
   * Drops the producer after a failed send. kafkajs's idempotent producer can be left with
   * sequence numbers out of step with the broker after a partly failed request (a later batch
   * could then be taken for a duplicate and dropped); a new producer gets a new producer id.
   */
  private async closeProducer(slot: number): Promise<void> {
    const entry = this.producers[slot];
    this.producers[slot] = undefined;
    if (entry !== undefined) await entry.client.disconnect().catch((err: unknown) => this.log.debug({ err }, 'disconnecting the producer failed'));
  }

  private async closeProducers(): Promise<void> {
    await Promise.all(this.producers.map((_, slot) => this.closeProducer(slot)));
  }

  private async cycle(): Promise<DrainResult> {
    try {
      return await this.tryCycle();
    } catch (err) {
      if (err instanceof KafkaUnavailable) await this.kafkaLost();
      throw err;
    }
  }

  private async tryCycle(): Promise<DrainResult> {
    const o = this.options;
    // Lanes only for a relay Kafka answers (a connection is a round trip: metadata, producer id).
    if (!this.kafkaReady) await this.ensureProducer();
    if (Date.now() >= this.nextRebalanceAt || this.leases.owned.length === 0) {
      await this.leases.rebalance();
      this.nextRebalanceAt = Date.now() + Math.ceil(o.leaseMs / 3);
      o.metrics.set('relay_lanes_owned', this.leases.owned.length, this.labels);
    }
    this.reportBacklog();
    const lanes = [...this.leases.owned];
    const result: DrainResult = { published: 0, failed: 0, parked: 0, fetched: 0, lanes: lanes.length };
    // After a full claim more rows are likely due: claim again without the probe.
    if (lanes.length === 0 || (!this.moreDue && !(await anyDue(o.db, o.schema, lanes)))) {
      await this.pingIfIdle();
      return result;
    }

    // Several claims at once over disjoint lanes (a key's lane is in one of them), each with its
    // own producer: one claim's database work overlaps another's send.
    const slots = splitLanes(lanes, o.parallelClaims);
    result.lanes = 0;
    const settled = await Promise.allSettled(
      slots.map((slotLanes, slot) => {
        const part: DrainResult = { published: 0, failed: 0, parked: 0, fetched: 0, lanes: 0 };
        return o.db.transaction().execute((trx) => this.claim(trx, slotLanes, part, slot));
      }),
    );
    let failure: unknown;
    this.moreDue = false;
    for (const s of settled) {
      if (s.status === 'rejected') {
        failure ??= s.reason;
        continue;
      }
      const outcome = s.value;
      for (const k of ['published', 'failed', 'parked', 'fetched', 'lanes'] as const) result[k] += outcome.result[k];
      this.moreDue ||= outcome.full;
      if (outcome.lost.length > 0) this.leases.lost(outcome.lost);
      failure ??= outcome.deferred;
    }
    if (failure !== undefined) throw failure;
    if (result.fetched === 0) await this.pingIfIdle();
    return result;
  }

  /** Sends one topic's rows as one request, bounded by `sendTimeoutMs`; never throws. */
  private async sendTopic(producer: ProducerClient, topic: string, rows: OutboxRow[]): Promise<TopicSend> {
    const sends = new RowSends(rows, this.options.schema);
    try {
      await this.bounded(producer.sendBatch([{ topic, messages: rows.map((row) => toMessage(row, sends)) }]), 'send');
      sends.end();
      return { topic, rows };
    } catch (error) {
      const kind: ProduceFailureKind = error instanceof KafkaSendTimeout ? 'unavailable' : producer.classify(error);
      sends.end(error, kind);
      this.options.metrics.increment('relay_send_errors_total', { ...this.labels, kind });
      return { topic, rows, error, kind };
    }
  }

  /**
   * The claim transaction: lock lanes, then batch after batch: read rows, send each topic's rows
   * as its own request (at the same time; they share no partition), delete what was
   * acknowledged, record failures. Pipelined: while a batch is in flight to Kafka, the previous
   * (acknowledged) batch is deleted and the next one read, leaving out the rows in flight; the
   * next batch is sent only once every row of this one was acknowledged (one request in flight
   * per producer, so a key's rows reach Kafka in id order), and not at all after a failure (a
   * failed row's key must not move on). Up to {@link PIPELINE_MAX_BATCHES} batches or
   * {@link PIPELINE_MAX_MS} per claim, so a claim stays short (its deletes commit together, and
   * every batch's read walks past the rows this claim deleted).
   */
  private async claim(trx: Transaction<unknown>, lanes: number[], result: DrainResult, slot: number): Promise<ClaimOutcome> {
    const o = this.options;
    // No bitmap or sequential scans in the claim: fetchPending must walk the pending index in id
    // order and stop at the batch. With statistics that lag a fast-growing backlog the planner
    // otherwise bitmap-scanned and sorted every pending row, probing each for a blocker first
    // (127 ms per claim at 30k pending rows, 0.65 ms walking the index). Every other statement
    // here looks rows up by key. Set by the statement that locks the lanes (the claim's first).
    const locked = await lockOwnedLanes(trx, o.schema, o.relayId, lanes, o.leaseMs, {
      idle_in_transaction_session_timeout: `${o.claimTimeoutMs}ms`,
      lock_timeout: '5s',
      enable_bitmapscan: 'off',
      enable_seqscan: 'off',
    });
    const lockedSet = new Set(locked);
    const outcome: ClaimOutcome = { result, full: false, lost: lanes.filter((l) => !lockedSet.has(l)) };
    result.lanes = locked.length;
    if (locked.length === 0) return outcome;
    const claimStarted = Date.now();
    let due = await fetchPending(trx, o.schema, locked, o.batchSize);
    let producer: ProducerClient | undefined;
    /** Acknowledged by Kafka, not deleted yet (deleted while the next batch is in flight). */
    let unacked: OutboxRow[] = [];
    for (let batch = 1; ; batch++) {
      const rows = capBytes(due, o.maxBatchBytes);
      outcome.full = due.length === o.batchSize || rows.length < due.length;
      if (rows.length === 0) break;
      result.fetched += rows.length;
      this.counters.batches++;
      o.metrics.observe('relay_batch_size', rows.length, this.labels);
      this.zeroed.topicsOf(rows);
      producer ??= await this.ensureProducer(slot);
      const readNext = outcome.full && batch < PIPELINE_MAX_BATCHES && Date.now() - claimStarted < Math.min(PIPELINE_MAX_MS, o.leaseMs / 4) && this.state !== 'stopping';
      const started = process.hrtime.bigint();
      const sending = Promise.all([...byTopic(rows)].map(([topic, topicRows]) => this.sendTopic(producer as ProducerClient, topic, topicRows)));
      const previous = unacked;
      unacked = [];
      // The previous batch's delete and the next batch's read, in one statement.
      const databaseWork = readNext
        ? this.acknowledged<OutboxRow[]>(trx, previous, locked, result, (ids) => fetchPending(trx, o.schema, locked, o.batchSize, { exclude: rows.map((r) => r.id), deleteFirst: ids }))
        : this.acknowledged<OutboxRow[]>(trx, previous, locked, result);
      const [sent, next] = await Promise.allSettled([sending, databaseWork]);
      o.metrics.observe('relay_send_duration_seconds', Number(process.hrtime.bigint() - started) / 1e9, this.labels);
      // sendTopic never throws; a database error ends the claim (rolled back: nothing of it is deleted).
      if (next.status === 'rejected') throw next.reason;
      const sends = (sent as PromiseFulfilledResult<TopicSend[]>).value;
      if (sends.every((t) => t.error === undefined)) {
        this.kafkaAnswered();
        unacked = rows;
        if (next.value === undefined || next.value.length === 0) break;
        due = next.value;
        continue;
      }
      // Rows read ahead stay for a later claim: more is due once the failed rows are settled.
      if (next.value !== undefined && next.value.length > 0) outcome.full = true;
      await this.settleFailures(trx, rows, sends, locked, result, outcome, slot);
      return outcome;
    }
    await this.acknowledged(trx, unacked, locked, result);
    return outcome;
  }

  /**
   * A batch with failed topics: the fallback (one request per row, backoff, parking) for what
   * failed, then deletes what was acknowledged. Rows read ahead are not sent in this claim.
   */
  private async settleFailures(trx: Transaction<unknown>, rows: readonly OutboxRow[], sends: readonly TopicSend[], locked: readonly number[], result: DrainResult, outcome: ClaimOutcome, slot: number): Promise<void> {
    const o = this.options;
    const acked = sends.filter((t) => t.error === undefined).flatMap((t) => t.rows);
    const failed = sends.filter((t) => t.error !== undefined);
    try {
      if (acked.length > 0 || failed.some((t) => t.kind !== 'unavailable')) this.kafkaAnswered();
      // A refused topic is found before any record is appended; after any other failure the
      // idempotent producer's sequence numbers may be out of step with the broker (a later
      // batch could be taken for a duplicate and dropped): a new producer gets a new producer id.
      if (failed.some((t) => !TOPIC_FAILURES.has(t.kind as ProduceFailureKind))) await this.closeProducer(slot);
      if (acked.length === 0 && failed.every((t) => t.kind === 'unavailable') && !(await this.kafkaAnswers(slot))) {
        const first = failed[0] as TopicSend;
        outcome.deferred = new KafkaUnavailable(`Kafka is unavailable; ${rows.length} rows stay in the outbox: ${describe(first.error)}`, { cause: first.error });
        return;
      }
      const deadline = Date.now() + o.sendTimeoutMs;
      for (const t of failed) {
        const kind = t.kind as ProduceFailureKind;
        this.log.warn({ err: t.error, topic: t.topic, kind, rows: t.rows.length }, TOPIC_FAILURES.has(kind) ? 'Kafka refused a topic; its rows back off' : "a topic's batch failed; sending its rows one at a time");
        if (TOPIC_FAILURES.has(kind)) {
          await this.failTopic(trx, t.rows, describe(t.error), kind, result);
          continue;
        }
        const fallback = await this.oneByOne(trx, t.rows, result, deadline, slot);
        acked.push(...fallback.acked);
        if (fallback.left) outcome.full = true;
        if (fallback.deferred !== undefined) {
          outcome.deferred = fallback.deferred;
          break;
        }
      }
    } finally {
      await this.acknowledged(trx, acked, locked, result);
    }
  }

  /** A topic refused as a whole: the first row of each key (and every keyless row) records the failure; the rest of each key waits behind it. */
  private async failTopic(trx: Transaction<unknown>, rows: readonly OutboxRow[], error: string, kind: ProduceFailureKind, result: DrainResult): Promise<void> {
    const blocked = new Set<string>();
    for (const row of rows) {
      const key = keyOf(row);
      if (key !== undefined) {
        if (blocked.has(key)) continue;
        blocked.add(key);
      }
      await this.recordFailure(trx, row, error, kind, result);
    }
  }

  /**
   * Kafka acknowledged `rows`: run the hook, delete them in the claim transaction (or let
   * `deleteWith` do it, a statement that deletes them among other work), count them.
   */
  private async acknowledged<T>(trx: Transaction<unknown>, rows: readonly OutboxRow[], lanes: readonly number[], result: DrainResult, deleteWith?: (ids: string[]) => Promise<T>): Promise<T | undefined> {
    const o = this.options;
    const ids = rows.map((r) => r.id);
    if (rows.length > 0) {
      const now = Date.now();
      for (const row of rows) o.metrics.observe('relay_publish_latency_seconds', Math.max(0, now - row.created_ms) / 1000, this.labels);
      await o.hooks.afterKafkaAck?.({ eventIds: rows.map((r) => r.event_id), lanes });
    }
    let value: T | undefined;
    if (deleteWith !== undefined) value = await deleteWith(ids);
    else await deletePublished(trx, o.schema, ids);
    if (rows.length === 0) return value;
    result.published += rows.length;
    this.counters.published += rows.length;
    const perTopic = new Map<string, number>();
    for (const row of rows) perTopic.set(row.topic, (perTopic.get(row.topic) ?? 0) + 1);
    for (const [topic, n] of perTopic) o.metrics.increment('relay_published_total', { ...this.labels, topic }, n);
    if (this.log.isLevelEnabled('debug')) {
      for (const row of rows) this.log.debug({ topic: row.topic, eventId: row.event_id, outboxId: row.id, lane: row.lane }, 'outbox row published');
    }
    return value;
  }

  /**
   * The fallback after a topic's batch failed: its rows in id order, one request each, until
   * `deadline`. Acknowledged rows are returned (deleted by the caller); a failing row backs off
   * or is parked and later rows of its key are not sent in this claim, so a key's order holds.
   */
  private async oneByOne(trx: Transaction<unknown>, rows: readonly OutboxRow[], result: DrainResult, deadline: number, slot: number): Promise<FallbackResult> {
    const blockedKeys = new Set<string>();
    let topicError: { error: string; kind: ProduceFailureKind } | undefined;
    const acked: OutboxRow[] = [];
    for (const row of rows) {
      const key = keyOf(row);
      if (key !== undefined && blockedKeys.has(key)) continue;
      if (topicError !== undefined) {
        await this.recordFailure(trx, row, topicError.error, topicError.kind, result);
        if (key !== undefined) blockedKeys.add(key);
        continue;
      }
      if (Date.now() > deadline) return { acked, left: true };
      let producer: ProducerClient;
      try {
        producer = await this.ensureProducer(slot);
      } catch (err) {
        if (err instanceof KafkaUnavailable) return { acked, left: true, deferred: err };
        throw err;
      }
      const sent = await this.sendTopic(producer, row.topic, [row]);
      if (sent.error === undefined) {
        acked.push(row);
        continue;
      }
      const kind = sent.kind as ProduceFailureKind;
      // A one-record request refused outright appended nothing; a time-out or a lost connection may have.
      if (kind === 'unavailable' || kind === 'retriable') await this.closeProducer(slot);
      if (key !== undefined) blockedKeys.add(key);
      if (TOPIC_FAILURES.has(kind)) topicError = { error: describe(sent.error), kind };
      await this.recordFailure(trx, row, describe(sent.error), kind, result);
      // An unclassified failure may be the cluster's, not the row's: leave the rest for a later
      // claim, so a cluster-wide error charges one row per claim, not all of them.
      if (kind === 'retriable') return { acked, left: true };
    }
    return { acked, left: false };
  }

  /** Backs the row off (later rows of its key wait), or parks it after `maxAttempts`; a row whose partition was unavailable is never parked. */
  private async recordFailure(trx: Transaction<unknown>, row: OutboxRow, error: string, kind: ProduceFailureKind, result: DrainResult): Promise<void> {
    const o = this.options;
    const attempts = row.attempts + 1;
    const park = kind !== 'unavailable' && attempts >= o.maxAttempts;
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
