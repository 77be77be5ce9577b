import { sql, type Transaction } from 'kysely';
import { createOutbox, createOutboxBuffer, holdConnection, isInFailedTransaction, openTelemetryTracing, runInTransaction, type HeldConnection, runWithTraceContext, TransactionAbortedError, type Outbox, type OutboxBuffer, type OutboxMessage } from '@effectively/core';
import type { ResolvedOptions } from './config';
import { Attempt } from './attempt';
import { AttemptLog, AttemptStarts, handledPrefix, priorAttempts, type AttemptState } from './attempt-log';
import { classify, idKey, type Classified } from './classify';
import { deadLetterMessage, rekeyTakenDeadLetters } from './dead-letter';
import { AttemptEndedError, FencedError, HandlerTimeoutError, isTransientDatabaseError } from './errors';
import type { HookContext } from './hooks';
import type { RawMessage } from './kafka-adapter';
import { lazyChildLogger } from './lazy-logger';
import { SideConnection } from './side-connection';
import { ProcessedEventStore, type ClaimRow, type EventKey, type OpenOptions, type OpenResult, type Redriven } from './store';
import { foldsBegin } from './prepared';
import { GenerationStore } from './generation-store';
import { LEGACY_CLOSED_SQLSTATE } from './generations';
import { ChunkTrace } from './tracing';

const tracing = openTelemetryTracing('@effectively/kafka');

/** What one chunk transaction achieved. */
export interface ChunkOutcome {
  /** How many leading messages of the chunk are settled (processed, duplicate or dead-lettered) and committed. */
  settled: number;
  /**
   * The first event that failed (threw or timed out) and must be retried: its position in the
   * chunk, the error, which attempt it was, and whether that was the last one (then the next
   * run dead-letters it at once), and when it failed (epoch ms: retry delays count from there).
   */
  failed?: { index: number; error: unknown; attempt: number; exhausted: boolean; at: number };
  processed: number;
  duplicates: number;
  conflicts: number;
  deadLettered: number;
  /** Copies of events that were dead-lettered, skipped without a new re-drive id (counted apart from `duplicates`). */
  deadLetteredDuplicates: number;
  /** Dead-lettered events handled again by a deliberate re-drive (also counted in `processed` when they succeed). */
  redriven: number;
  hook: HookContext;
}

/** Longest wait for the side connection before a bookkeeping statement is skipped. */
const SIDE_WAIT_MS = 2000;

type EventItem<T> = Extract<Classified<T>, { kind: 'event' }>;

/**
 * The transaction was given up: a handler (or hook) timed out, a handler hit a transient
 * database error, or the consumer is stopping. User code may still be running or have
 * statements queued, so the connection is ended rather than rolled back and reused.
 */
class AbortTransaction extends Error {
  constructor(
    /** `failed`: a handler threw with no savepoint to roll back to (alone in its transaction, not its last attempt). */
    readonly kind: 'timeout' | 'transient' | 'stopped' | 'failed',
    readonly inner: unknown,
    /** The event whose handler timed out; undefined for a batch handler or a hook. `run`: the per-event run of this consumer it ran in (see {@link ChunkProcessor.runs}). */
    readonly event?: { index: number; offset: string; id: string; attempt: number; alone: boolean; run?: Run | undefined },
    readonly at = Date.now(),
  ) {
    super(`transaction given up (${kind})`);
  }
}

/** A chunk transaction in progress: what `abandon` needs to end it from outside. */
interface OpenChunk {
  trx?: Transaction<unknown>;
  outbox?: OutboxBuffer;
  backend?: { pid: number; started: string } | undefined;
  attempts: Set<Attempt>;
  aborted?: AbortTransaction;
  /**
   * Per-event mode: the event whose handler returned in this transaction without a savepoint.
   * If the transaction turns out aborted after that (a later statement fails with 25P02, or
   * COMMIT answers ROLLBACK), user code caught a database error: the event failed.
   */
  returned?: NonNullable<AbortTransaction['event']>;
}

/** A per-event transaction begun ahead with its message's claim (see {@link ChunkProcessor.run}'s `next`), waiting on its held connection. */
interface Parked {
  held: HeldConnection;
  opened: OpenResult;
  /** The message it claimed (as the caller will pass it on), classified; the epoch and the store it claimed with. */
  message: RawMessage;
  classified: Classified<unknown>;
  epoch: string | undefined;
  store: ProcessedEventStore;
}

/** What was recorded outside the transaction before handlers started (to take back if the failure is not theirs). */
type Recorded = { kind: 'event'; offset: string } | { kind: 'run'; first: string; last: string };

/** A range of offsets recorded in `consumer_attempts` as a run. */
interface Run {
  first: string;
  last: string;
}

/** A statement after user code that fails because user code left the transaction aborted: rethrown as {@link TransactionAbortedError}. */
function aborted(error: unknown): never {
  throw isInFailedTransaction(error) ? new TransactionAbortedError({ cause: error }) : error;
}

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * Runs one transaction over a contiguous chunk of one partition: claim every id with one
 * multi-row insert, skip duplicates, run the handlers (each event in a savepoint, each run of
 * user code as an {@link Attempt} with a time limit), dead-letter what is exhausted or
 * rejected, release the claims of what failed, commit.
 */
export class ChunkProcessor<T> {
  /** The claim path: {@link ProcessedEventStore}, or {@link GenerationStore} once the schema's retention is by generations. */
  private store: ProcessedEventStore;
  private readonly attemptLog: AttemptLog;
  private readonly open = new Set<OpenChunk>();
  /** Where statements outside chunk transactions run (never a second pool connection while a chunk holds one). */
  readonly side: SideConnection;
  /** Attempt records of handlers about to run alone, several partitions' in one statement. */
  private readonly attemptStarts: AttemptStarts;
  /** Writes dead letters that had to take another id (see {@link rekeyTakenDeadLetters}). */
  private readonly deadLetterOutbox: Outbox;
  /**
   * Per-event mode, per partition (`topic:partition`): the run this consumer recorded for the
   * rest of a fetched batch (from the first event it ran to the batch's last offset). Its
   * events run without an attempt record of their own: events run one at a time in offset
   * order, so if this consumer ends, the first of them not committed is the one that was
   * running (or the next one), and the next consumer counts the run against that event only
   * (`absorbRun`). Forgotten when an event of it fails (the event then has a count of its own),
   * when the batch is left unfinished, and at every assignment.
   */
  private readonly runs = new Map<string, Run>();
  /**
   * Batch mode, per partition: the run of several handlers this consumer recorded last (before
   * its chunk's handlers started). Kept only to forget it once the fetched batch is finished
   * (see {@link finishRun}); not consulted otherwise.
   */
  private readonly batchRuns = new Map<string, Run>();
  /** Per-event mode, per partition: the transaction begun ahead for the message the partition runs next. */
  private readonly parked = new Map<string, Parked>();
  private folds: Promise<boolean> | undefined;

  constructor(private readonly options: ResolvedOptions<T>) {
    this.deadLetterOutbox = createOutbox({ schema: options.schema, ...(options.traceContext !== undefined ? { traceContext: options.traceContext } : {}) });
    this.store = new ProcessedEventStore(options.schema, options.groupId, { preparedStatements: options.preparedStatements });
    this.attemptLog = new AttemptLog(options.schema, options.groupId, { preparedStatements: options.preparedStatements });
    this.side = new SideConnection(options.db, options.logger);
    this.attemptStarts = new AttemptStarts((starts) => this.side.run((db) => this.attemptLog.addAttempts(db, starts), SIDE_WAIT_MS));
  }

  get processedEvents(): ProcessedEventStore {
    return this.store;
  }

  /** True once claims go to the generations (see {@link useGenerations}). */
  get onGenerations(): boolean {
    return this.store instanceof GenerationStore;
  }

  /** Claims go to `processed_event_generations` from the next chunk on (the schema's retention is by generations). */
  useGenerations(): void {
    if (!(this.store instanceof GenerationStore)) this.store = new GenerationStore(this.options.schema, this.options.groupId, { preparedStatements: this.options.preparedStatements });
  }

  /**
   * Gives up every open chunk transaction (the consumer is stopping and they outlived
   * `shutdownTimeoutMs`): user code is refused from now on and each connection is ended, so
   * nothing of that work can commit after `stop()` returns.
   */
  async abandonAll(why: string): Promise<void> {
    const parked = [...this.parked.values()];
    this.parked.clear();
    await Promise.all(parked.map((p) => this.closeParked(p)));
    await Promise.all(
      [...this.open].map(async (chunk) => {
        chunk.aborted ??= new AbortTransaction('stopped', new AttemptEndedError(why));
        await this.endConnection(chunk, why);
      }),
    );
  }

  /**
   * @param epoch the partition epoch this member holds, when fencing
   * @param fetchedLast per-event mode: the last offset of the fetched batch these messages come from (how far a run may reach)
   * @param next per-event mode: the message the caller runs next (the following one of the fetched batch). When this one
   *   succeeds, its COMMIT is sent with BEGIN and the claim of `next` in one round trip; `next`'s transaction is then kept
   *   open on the connection for the call that runs it (see {@link discardParked}).
   */
  async run(messages: RawMessage[], epoch: string | undefined, fetchedLast?: string, next?: RawMessage): Promise<ChunkOutcome> {
    const trace = new ChunkTrace(tracing, this.options.groupId, messages);
    try {
      const outcome = await this.runTransaction(messages, epoch, trace, fetchedLast, next);
      trace.end('committed', { ...outcome, retry: outcome.failed !== undefined });
      return outcome;
    } catch (error) {
      // Generations were enabled while this consumer claimed in processed_events: switch, and the retry claims there.
      if ((error as { code?: unknown } | null)?.code === LEGACY_CLOSED_SQLSTATE && !this.onGenerations) {
        this.useGenerations();
        this.options.logger.warn('dedup generations were enabled in this schema: claims now go to processed_event_generations');
      }
      trace.end(error instanceof FencedError ? 'fenced' : 'rolled_back', { processed: 0, duplicates: 0, conflicts: 0, deadLettered: 0, retry: true }, error);
      throw error;
    }
  }

  /** Partitions were (re)assigned: runs recorded before are no longer known to be this consumer's. */
  forgetRuns(): void {
    this.runs.clear();
    this.batchRuns.clear();
  }

  /**
   * Every message of a fetched batch of the partition was settled: the run this consumer
   * recorded last for it (per-event mode: the rest of the batch; batch mode: its last chunk's
   * handlers) describes offsets that have all committed, and its record is cleared. Left in
   * place, it described those offsets to whoever reads them next: offsets start again at 0 when
   * a topic is deleted and created again, and the new events there were taken for an unfinished
   * run's (handled one per transaction, each counting one attempt more than it had).
   */
  async finishRun(topic: string, partition: number): Promise<void> {
    const key = `${topic}:${partition}`;
    const runs = [this.runs.get(key), this.batchRuns.get(key)].filter((r): r is Run => r !== undefined);
    this.runs.delete(key);
    this.batchRuns.delete(key);
    for (const run of runs) await this.forgetRecordedRun(topic, partition, run, 'could not clear the attempt record of a finished run');
  }

  /**
   * A fetched batch of the partition was left before its end (stopping, rebalance, fenced): its
   * run is forgotten, so the next consumer does not count it against an event that never started.
   */
  async leaveRun(topic: string, partition: number): Promise<void> {
    const run = this.runs.get(`${topic}:${partition}`);
    if (run === undefined) return;
    this.runs.delete(`${topic}:${partition}`);
    await this.forgetRecordedRun(topic, partition, run, 'could not forget the run of a batch left unfinished');
  }

  /** Clears the partition's run record if it still is `run` (bookkeeping: a failure is logged, not raised). */
  private async forgetRecordedRun(topic: string, partition: number, run: Run, failure: string): Promise<void> {
    try {
      await this.side.run((db) => this.attemptLog.forgetRun(db, topic, partition, run.first, run.last), SIDE_WAIT_MS);
    } catch (error) {
      this.options.logger.debug({ err: error, topic, partition }, failure);
    }
  }

  /**
   * Rolls back and hands back the connection of the partition's parked transaction (a claim made
   * ahead, see {@link run}'s `next`), if any: the caller will not run that message now (the
   * fetched batch ends, the partition waits for a retry, the consumer stops or is rebalanced).
   */
  async discardParked(topic: string, partition: number): Promise<void> {
    const key = `${topic}:${partition}`;
    const parked = this.parked.get(key);
    if (parked === undefined) return;
    this.parked.delete(key);
    await this.closeParked(parked);
  }

  private async closeParked(parked: Parked): Promise<void> {
    try {
      await parked.held.rollback();
    } catch (error) {
      this.options.logger.debug({ err: error, offset: parked.message.offset }, 'could not roll back a claim made ahead; it ends with its connection');
    } finally {
      parked.held.release();
    }
  }

  /** The partition's parked transaction if it was made for exactly this chunk (else it is discarded). */
  private async unpark(topic: string, partition: number, messages: RawMessage[], candidates: Array<Classified<T>>, epoch: string | undefined): Promise<Parked | undefined> {
    const key = `${topic}:${partition}`;
    const parked = this.parked.get(key);
    if (parked === undefined) return undefined;
    this.parked.delete(key);
    const only = candidates[0];
    if (messages.length === 1 && only !== undefined && parked.message === only.message && parked.epoch === epoch && parked.store === this.store) return parked;
    await this.closeParked(parked);
    return undefined;
  }

  /** Whether BEGIN and COMMIT can travel with the claim (probed once, on one connection). */
  private foldsBegin(): Promise<boolean> {
    this.folds ??= this.options.db
      .connection()
      .execute((connection) => foldsBegin(connection))
      .catch(() => {
        this.folds = undefined; // asked again at the next chunk
        return false;
      });
    return this.folds;
  }

  /** The claim statement's options for `candidates` (the chunk's first copy of each id). */
  private claimOptions(candidates: Array<Classified<T>>, epoch: string | undefined): OpenOptions {
    const o = this.options;
    const first = candidates[0]?.message as RawMessage;
    const rows: ClaimRow[] = candidates.map((c) => ({
      eventId: c.id,
      origin: c.origin,
      payloadHash: c.hash,
      topic: c.message.topic,
      partition: c.message.partition,
      offset: c.message.offset,
      status: c.kind === 'rejected' ? 'dead_lettered' : 'processed',
      error: c.kind === 'rejected' ? `${c.reason}: ${c.error}` : null,
    }));
    return {
      lockTimeoutMs: o.lockTimeoutMs,
      statementTimeoutMs: o.statementTimeoutMs,
      ...(epoch === undefined ? {} : { fence: { topic: first.topic, partition: first.partition, epoch } }),
      rows,
      also: (t, p) => this.attemptLog.stateColumns(t, p),
    };
  }

  /**
   * Runs `body` in the chunk's transaction and commits it. Per-event mode with begin folding
   * (prepared statements): the transaction is on a connection held for the partition; a parked
   * transaction made for this chunk is used (its claim already made, `body` gets it); and when
   * `ahead` names the next message after a success, COMMIT travels with BEGIN and the next
   * message's claim, whose transaction is parked. COMMIT's answer is checked either way
   * ({@link TransactionAbortedError} when Postgres rolled back).
   */
  private async inTransaction(
    fold: boolean,
    parked: Parked | undefined,
    body: (trx: Transaction<unknown>, begin: boolean, claimed: OpenResult | undefined) => Promise<void>,
    ahead: () => { key: string; message: RawMessage; classified: Classified<T>; epoch: string | undefined; options: OpenOptions } | undefined,
  ): Promise<void> {
    if (!fold) return runInTransaction(this.options.db, false, (trx, begin) => body(trx, begin, undefined));
    const held = parked?.held ?? (await holdConnection(this.options.db));
    let keep = false;
    try {
      try {
        await body(held.trx, parked === undefined, parked?.opened);
      } catch (error) {
        await held.rollback();
        throw error;
      }
      const next = ahead();
      if (next === undefined) return await held.commit();
      const commit: { tag?: string } = {};
      const store = this.store;
      let opened: OpenResult;
      try {
        opened = await store.open(held.trx, { ...next.options, begin: true, commitFirst: commit });
      } catch (error) {
        // Ends the next message's transaction if it began (without one, Postgres only warns).
        await held.rollback().catch(() => undefined);
        if (commit.tag === undefined) throw error;
        if (commit.tag !== 'COMMIT') throw new TransactionAbortedError();
        // Committed; the claim made ahead failed: the next run makes it again and meets whatever made it fail.
        this.options.logger.debug({ err: error, offset: next.message.offset }, 'claim made ahead failed; made again by its own run');
        return;
      }
      if (commit.tag !== 'COMMIT') {
        await held.rollback();
        throw new TransactionAbortedError();
      }
      this.parked.set(next.key, { held, opened, message: next.message, classified: next.classified, epoch: next.epoch, store });
      keep = true;
    } finally {
      if (!keep) held.release();
    }
  }

  private async runTransaction(messages: RawMessage[], epoch: string | undefined, trace: ChunkTrace, fetchedLast: string | undefined, nextMessage: RawMessage | undefined): Promise<ChunkOutcome> {
    const o = this.options;
    const first = messages[0] as RawMessage;
    const last = messages[messages.length - 1] as RawMessage;
    const { topic, partition } = first;
    // A message claimed ahead was classified then: not again.
    const ahead = this.parked.get(`${topic}:${partition}`);
    const classified = messages.map((m) => (ahead?.message === m ? (ahead.classified as Classified<T>) : classify(m, o)));
    trace.eventId((classified[0] as Classified<T>).id, messages.length);
    // Within the chunk, only the first copy of an id is a candidate; later copies are duplicates.
    const firstIndexOf = new Map<string, number>();
    classified.forEach((c, i) => {
      if (!firstIndexOf.has(c.key)) firstIndexOf.set(c.key, i);
    });
    const candidates = classified.filter((c, i) => firstIndexOf.get(c.key) === i);
    const hook: HookContext = { topic, partition, firstOffset: first.offset, lastOffset: last.offset, claimed: [] };
    const outcome: ChunkOutcome = { settled: messages.length, processed: 0, duplicates: 0, conflicts: 0, deadLettered: 0, deadLetteredDuplicates: 0, redriven: 0, hook };
    const empty = { ...outcome };
    const log = lazyChildLogger(o.logger, { topic, partition });
    const position = new Map(messages.map((m, i) => [m.offset, i]));
    const indexOf = (m: RawMessage): number => position.get(m.offset) as number;
    const chunk: OpenChunk = { attempts: new Set() };
    let recorded: Recorded | undefined;
    const fold = o.mode === 'event' && o.preparedStatements && (await this.foldsBegin());
    const parked = fold ? await this.unpark(topic, partition, messages, candidates, epoch) : undefined;
    this.open.add(chunk);

    try {
      // Per-event mode with prepared statements: BEGIN travels with the claim, and COMMIT with the next event's claim (two round trips less per event).
      const ahead = () => {
        if (nextMessage === undefined || outcome.failed !== undefined || outcome.settled !== messages.length || chunk.aborted !== undefined) return undefined;
        const c = classify(nextMessage, o);
        return { key: `${topic}:${partition}`, message: nextMessage, classified: c, epoch, options: this.claimOptions([c], epoch) };
      };
      await this.inTransaction(fold, parked, async (trx, begin, claimedAhead) => {
        try {
          // Handlers' outbox rows are queued and written in one statement just before COMMIT.
          const outbox = createOutboxBuffer({ schema: o.schema, ...(o.traceContext !== undefined ? { traceContext: o.traceContext } : {}) });
          Object.assign(chunk, { trx, outbox });
          // One round trip: timeouts, fence check (a share lock on the fence row once something is claimed), claim, stored hashes, the backend and the attempt state.
          const opened = claimedAhead ?? (await this.store.open(trx, { ...this.claimOptions(candidates, epoch), begin }));
          const start = this.attemptLog.parseState(opened.also);
          // The run this consumer recorded is no other consumer's unfinished one.
          const own = this.runs.get(`${topic}:${partition}`);
          if (own !== undefined && start.state.run !== undefined && start.state.run.first === BigInt(own.first) && start.state.run.last === BigInt(own.last)) start.state.run = undefined;
          chunk.backend = start.backend;
          if (chunk.aborted !== undefined) throw chunk.aborted;
          if (!opened.held) throw new FencedError(topic, partition);
          const claimed = opened.claimed;
          const stored = opened.stored;
          // The claim statement locks the fence only if it claimed something; anything else this
          // transaction writes (a re-drive, a dead letter of a conflicting copy) takes the lock first.
          let fenceLocked = epoch === undefined || claimed.size > 0;
          const lockFence = async (): Promise<void> => {
            if (fenceLocked || epoch === undefined) return;
            if (!(await this.store.lockFence(trx, { topic, partition, epoch }))) throw new FencedError(topic, partition);
            fenceLocked = true;
          };
          // Ids committed by another transaction while this one waited on them: read their hashes now.
          const unseen = candidates.filter((c) => !claimed.has(c.key) && !stored.has(c.key)).map((c) => ({ origin: c.origin, eventId: c.id }));
          if (unseen.length > 0) for (const [key, found] of await this.store.storedHashes(trx, unseen)) stored.set(key, found);
          // Deliberate re-drives of dead-lettered events: taken back (once per re-drive id) and handled as if new.
          const redrives = candidates.flatMap((c) =>
            c.kind === 'event' && c.redriveId !== undefined && !claimed.has(c.key) && stored.get(c.key)?.status === 'dead_lettered'
              ? [{ origin: c.origin, eventId: c.id, redriveId: c.redriveId, offset: c.message.offset }]
              : [],
          );
          const redriven = new Map<string, Redriven>();
          if (redrives.length > 0) await lockFence();
          for (const r of await this.store.redrive(trx, redrives)) {
            redriven.set(idKey(r.origin, r.eventId), r);
            claimed.add(idKey(r.origin, r.eventId));
          }
          hook.claimed = candidates.filter((c) => claimed.has(c.key)).map((c) => c.id);

          // Duplicates: of an earlier transaction (not claimed), or of an earlier copy in this chunk.
          const dupes = classified.filter((c, i) => firstIndexOf.get(c.key) !== i || !claimed.has(c.key));
          const firstHash = new Map(candidates.map((c) => [c.key, c.hash]));
          const dlq: OutboxMessage[] = [];
          for (const d of dupes) {
            const reference = claimed.has(d.key) ? firstHash.get(d.key) : stored.get(d.key)?.payloadHash;
            if (!claimed.has(d.key) && stored.get(d.key)?.status === 'dead_lettered') {
              outcome.deadLetteredDuplicates++;
              log.warn({ offset: d.message.offset, eventId: d.id }, 'copy of a dead-lettered event skipped; to apply it, re-drive it (effectively dlq replay)');
            } else {
              outcome.duplicates++;
              log.debug({ offset: d.message.offset, eventId: d.id }, 'duplicate skipped');
            }
            trace.duplicate(d.message, d.id, reference !== undefined && reference !== d.hash);
            if (reference !== undefined && reference !== d.hash) {
              outcome.conflicts++;
              log.warn({ offset: d.message.offset, eventId: d.id }, 'conflicting duplicate: same event id, different payload; the first payload was kept');
              if (o.onConflict === 'dead-letter') {
                dlq.push(deadLetterMessage(d.message, { group: o.groupId, topic: o.deadLetterTopic(d.message.topic), eventId: d.id, origin: d.origin, reason: 'conflicting-duplicate', error: `payload hash ${d.hash} differs from processed ${reference}`, attempts: 0 }));
              }
            }
          }

          const fresh = candidates.filter((c) => claimed.has(c.key));
          for (const r of fresh) {
            if (r.kind !== 'rejected') continue;
            outcome.deadLettered++;
            log.warn({ offset: r.message.offset, eventId: r.id, reason: r.reason }, `dead-lettered without handling: ${r.error}`);
            trace.deadLettered(r.message, r.id, r.reason);
            dlq.push(deadLetterMessage(r.message, { group: o.groupId, topic: o.deadLetterTopic(r.message.topic), eventId: r.id, origin: r.origin, ...(r.refusedId !== undefined ? { refusedId: r.refusedId } : {}), reason: r.reason, error: r.error, attempts: 0 }));
          }

          const events = fresh.filter((c): c is EventItem<T> => c.kind === 'event');
          const unsettled = await this.handle(chunk as Required<Pick<OpenChunk, 'trx' | 'outbox'>> & OpenChunk, events, start.state, dlq, outcome, log, indexOf, (r) => (recorded = r), trace, fetchedLast);
          const unsettledKeys = new Set(unsettled.map((k) => idKey(k.origin, k.eventId)));
          outcome.redriven = [...redriven.keys()].filter((k) => !unsettledKeys.has(k)).length;
          if (redriven.size > 0) log.warn({ redriven: outcome.redriven, eventIds: [...redriven.values()].map((r) => r.eventId) }, 'dead-lettered events re-driven');
          await this.store.restore(trx, [...redriven.values()].filter((r) => unsettledKeys.has(idKey(r.origin, r.eventId))));
          const released = unsettled.filter((k) => !redriven.has(idKey(k.origin, k.eventId)));
          if (released.length > 0) await this.store.release(trx, released);
          if (dlq.length > 0) {
            await lockFence();
            await outbox.outbox.publish(trx, dlq);
          }
          // Dead letters are queued after the handlers' rows: one whose derived id a producer chose takes another id.
          const flushed = await outbox.flush(trx);
          if (dlq.length > 0 && flushed.alreadyPublished.length > 0) await rekeyTakenDeadLetters(trx, this.deadLetterOutbox, o.schema, dlq, flushed.alreadyPublished);
          const beforeDbCommit = o.hooks.beforeDbCommit;
          if (beforeDbCommit !== undefined) {
            await this.runUser(chunk, () => Promise.resolve(beforeDbCommit(hook))).catch((error: unknown) => {
              throw error instanceof HandlerTimeoutError ? new AbortTransaction('transient', error) : error;
            });
          }
        } catch (error) {
          if (error instanceof AbortTransaction) {
            chunk.aborted ??= error;
            if (error.kind === 'failed') await this.barrier(chunk);
            else await this.endConnection(chunk, error.kind);
          }
          throw error;
        }
      }, ahead);
    } catch (error) {
      // When the connection was ended, Kysely's ROLLBACK fails too: what happened is in `chunk.aborted`.
      const returned = chunk.returned;
      if (chunk.aborted === undefined && returned !== undefined && (error instanceof TransactionAbortedError || isInFailedTransaction(error))) {
        // Per-event mode: the handler returned, but its transaction had been aborted by a statement whose error user code caught.
        const inner = error instanceof TransactionAbortedError ? error : new TransactionAbortedError({ cause: error });
        trace.rolledBack(inner);
        log.warn({ offset: returned.offset, eventId: returned.id, err: inner, attempt: returned.attempt, maxAttempts: o.maxAttempts }, 'handler returned, but a statement of its transaction had failed; nothing was committed; will retry');
        return this.afterFailure(new AbortTransaction('failed', inner, returned), returned, empty, topic, partition);
      }
      const aborted = chunk.aborted;
      if (aborted?.kind === 'timeout' || aborted?.kind === 'failed') trace.rolledBack(aborted.inner);
      if (aborted?.kind === 'timeout') return this.afterTimeout(aborted, recorded, empty, indexOf(first), topic, partition);
      if (aborted?.kind === 'failed' && aborted.event !== undefined) return this.afterFailure(aborted, aborted.event, empty, topic, partition);
      if (recorded !== undefined) await this.takeBack(recorded, topic, partition, log);
      throw aborted?.inner ?? error;
    } finally {
      this.open.delete(chunk);
      for (const a of chunk.attempts) a.end('its transaction ended');
    }
    return outcome;
  }

  /**
   * Runs the handlers of one run; returns the ids whose claims must be released (failed, not
   * reached, or left for a run of their own).
   */
  private async handle(
    chunk: OpenChunk & { trx: Transaction<unknown>; outbox: OutboxBuffer },
    events: Array<EventItem<T>>,
    state: AttemptState,
    dlq: OutboxMessage[],
    outcome: ChunkOutcome,
    log: ChunkProcessorLogger,
    indexOf: (message: RawMessage) => number,
    record: (r: Recorded) => void,
    trace: ChunkTrace,
    fetchedLast: string | undefined,
  ): Promise<EventKey[]> {
    const o = this.options;
    if (events.length === 0) return [];
    const { topic, partition } = events[0]?.message as RawMessage;
    const handled = events.slice(0, handledPrefix(state, events.map((e) => BigInt(e.message.offset))));
    const keyOf = (e: EventItem<T>): EventKey => ({ origin: e.origin, eventId: e.id });
    const unsettled = events.slice(handled.length).map(keyOf);
    const next = events[handled.length];
    if (next !== undefined) outcome.settled = indexOf(next.message);
    const head = handled[0] as EventItem<T>;
    const prior = (e: EventItem<T>) => priorAttempts(state, BigInt(e.message.offset), e.id);

    // An event that already used up its attempts (timed out, or the consumer died in it) is dead-lettered without running again.
    const headPrior = prior(head);
    if (o.onFailure === 'dead-letter' && headPrior.recorded > 0 && headPrior.total >= o.maxAttempts) {
      const error = headPrior.lastError ?? 'the handler never finished: the consumer ended (exit, crash, kill) while running it';
      outcome.deadLettered++;
      log.error({ offset: head.message.offset, eventId: head.id, attempts: headPrior.total, err: error }, 'handler did not succeed on any attempt; dead-lettered');
      trace.deadLettered(head.message, head.id, 'handler-failed');
      await this.store.markDeadLettered(chunk.trx, keyOf(head), error, headPrior.total);
      dlq.push(deadLetterMessage(head.message, { group: o.groupId, topic: o.deadLetterTopic(topic), eventId: head.id, origin: head.origin, reason: 'handler-failed', error, attempts: headPrior.total }));
      return unsettled;
    }

    // Count the attempt before any handler starts, outside this transaction, so it survives whatever happens next.
    const lastHandled = handled[handled.length - 1] as EventItem<T>;
    const alone = handled.length === 1;
    // Per-event mode: a chunk is one message, so the transaction holds nothing but this event.
    const single = o.mode === 'event';
    const runKey = `${topic}:${partition}`;
    const headOffset = BigInt(head.message.offset);
    // Per-event mode: the run of this consumer the event runs in (no record of its own), see `runs`.
    let run: Run | undefined;
    try {
      const own = this.runs.get(runKey);
      const foreign = state.run;
      if (single && headPrior.total === 0 && own !== undefined && BigInt(own.first) <= headOffset && headOffset <= BigInt(own.last)) {
        run = own;
      } else if (single && headPrior.total === 0 && fetchedLast !== undefined && BigInt(fetchedLast) > headOffset) {
        // One record for the rest of the fetched batch instead of one per event (the last event alone is recorded as an event).
        const next = { first: head.message.offset, last: fetchedLast };
        this.runs.delete(runKey);
        await this.side.run((db) => this.attemptLog.startRun(db, topic, partition, next.first, next.last), SIDE_WAIT_MS);
        this.runs.set(runKey, next);
        run = next;
        record({ kind: 'run', ...next });
      } else if (single && foreign !== undefined && foreign.first < foreign.last && headOffset >= foreign.first && headOffset <= foreign.last) {
        // The first event not committed of another consumer's run: that run's attempt was this event's (events run in
        // offset order, so those before it committed and none after it started). A run a consumer in batch mode left
        // (several events in one transaction, any of them may be the cause) is counted against this event too, once.
        const absorbRun = { first: foreign.first.toString(), last: foreign.last.toString() };
        await this.side.run((db) => this.attemptLog.addAttempt(db, topic, partition, { offset: head.message.offset, eventId: head.id }, { error: null, durable: false, absorbRun }), SIDE_WAIT_MS);
        record({ kind: 'event', offset: head.message.offset });
      } else if (alone) {
        await this.attemptStarts.record({ topic, partition, offset: head.message.offset, eventId: head.id });
        record({ kind: 'event', offset: head.message.offset });
      } else {
        await this.side.run((db) => this.attemptLog.startRun(db, topic, partition, head.message.offset, lastHandled.message.offset), SIDE_WAIT_MS);
        this.batchRuns.set(runKey, { first: head.message.offset, last: lastHandled.message.offset });
        record({ kind: 'run', first: head.message.offset, last: lastHandled.message.offset });
      }
    } catch (error) {
      // Not recorded: failures and time-outs of this run still count (recorded with them), a process exit in it does not.
      log.warn({ err: error, offset: head.message.offset }, 'could not record the attempt before the handler; running it anyway');
    }

    if (o.batchHandler !== undefined && !single && handled.every((e) => prior(e).total === 0)) {
      const batchHandler = o.batchHandler;
      await sql`SAVEPOINT effectively_batch`.execute(chunk.trx);
      const mark = chunk.outbox.mark();
      try {
        await this.runUser(chunk, (a) => trace.run(() => batchHandler(handled.map((e) => e.event), { trx: a.trx, outbox: a.outbox, logger: log })));
        // Fails (25P02) when the batch handler caught a database error and returned: the transaction is aborted.
        await sql`RELEASE SAVEPOINT effectively_batch`.execute(chunk.trx).catch(aborted);
        outcome.processed += handled.length;
        return unsettled;
      } catch (caught) {
        const error = isInFailedTransaction(caught) ? new TransactionAbortedError({ cause: caught }) : caught;
        // A batch handler that timed out is not retried as a batch: its events run one per transaction next.
        if (error instanceof HandlerTimeoutError) throw new AbortTransaction('timeout', error);
        if (isTransientDatabaseError(error)) throw new AbortTransaction('transient', error);
        await sql`ROLLBACK TO SAVEPOINT effectively_batch`.execute(chunk.trx);
        chunk.outbox.rollbackTo(mark);
        log.warn({ err: error, events: handled.length }, 'batch handler failed; handling the chunk one event at a time');
      }
    }

    for (const [i, e] of handled.entries()) {
      const offset = e.message.offset;
      const p = prior(e);
      const attempt = p.total + 1;
      const eventLog = lazyChildLogger(log, { offset, eventId: e.id });
      // A savepoint keeps the rest of the transaction when this handler fails. Alone in its
      // transaction, an event needs one only when a failure is dead-lettered in the same
      // transaction (its last attempt); otherwise a failure rolls the whole transaction back,
      // which also releases the claim.
      const savepoint = !single || (attempt >= o.maxAttempts && o.onFailure === 'dead-letter');
      if (savepoint) await sql`SAVEPOINT effectively_event`.execute(chunk.trx);
      const mark = chunk.outbox.mark();
      try {
        const handler = o.handler;
        await this.runUser(chunk, (a) => trace.run(() => runWithTraceContext(trace.context(e.message), () => handler(e.event, { trx: a.trx, outbox: a.outbox, logger: eventLog, attempt }))));
        // Fails (25P02) when the handler caught a database error and returned: the transaction is aborted.
        if (savepoint) await sql`RELEASE SAVEPOINT effectively_event`.execute(chunk.trx).catch(aborted);
        else chunk.returned = { index: indexOf(e.message), offset, id: e.id, attempt, alone, run };
        outcome.processed++;
      } catch (caught) {
        const error = isInFailedTransaction(caught) ? new TransactionAbortedError({ cause: caught }) : caught;
        const failedAt = Date.now();
        if (error instanceof HandlerTimeoutError) {
          throw new AbortTransaction('timeout', error, { index: indexOf(e.message), offset, id: e.id, attempt, alone, run });
        }
        if (isTransientDatabaseError(error)) throw new AbortTransaction('transient', error);
        trace.handlerFailed(e.message, e.id, attempt, error);
        if (!savepoint) {
          eventLog.warn({ err: error, attempt, maxAttempts: o.maxAttempts }, 'handler failed; will retry');
          throw new AbortTransaction('failed', error, { index: indexOf(e.message), offset, id: e.id, attempt, alone, run }, failedAt);
        }
        await sql`ROLLBACK TO SAVEPOINT effectively_event`.execute(chunk.trx);
        chunk.outbox.rollbackTo(mark);
        if (attempt >= o.maxAttempts && o.onFailure === 'dead-letter') {
          outcome.deadLettered++;
          eventLog.error({ err: error, attempts: attempt }, 'handler failed on every attempt; dead-lettered');
          trace.deadLettered(e.message, e.id, 'handler-failed');
          await this.store.markDeadLettered(chunk.trx, keyOf(e), errorText(error), attempt);
          dlq.push(deadLetterMessage(e.message, { group: o.groupId, topic: o.deadLetterTopic(topic), eventId: e.id, origin: e.origin, reason: 'handler-failed', error: errorText(error), attempts: attempt }));
          continue;
        }
        // Recorded in this (committing) transaction; the events after it wait for its retry, in order.
        if (alone) {
          await this.attemptLog.setError(chunk.trx, topic, partition, offset, errorText(error));
        } else {
          await this.attemptLog.addAttempt(chunk.trx, topic, partition, { offset, eventId: e.id }, { error: errorText(error), durable: true, forgetRun: { first: head.message.offset, last: lastHandled.message.offset } });
        }
        eventLog.warn({ err: error, attempt, maxAttempts: o.maxAttempts }, 'handler failed; will retry');
        unsettled.push(...handled.slice(i).map(keyOf));
        outcome.failed = { index: indexOf(e.message), error, attempt, exhausted: false, at: failedAt };
        outcome.settled = indexOf(e.message);
        break;
      }
    }
    return unsettled;
  }

  /**
   * Runs user code as an {@link Attempt} bounded by `handlerTimeoutMs`. The attempt ends when
   * the code returns, throws or times out; at a time-out it ends before anything else runs.
   */
  private async runUser(chunk: OpenChunk, fn: (attempt: Attempt) => Promise<void>): Promise<void> {
    if (chunk.trx === undefined || chunk.outbox === undefined) throw new Error('runUser outside a chunk transaction');
    if (chunk.aborted !== undefined) throw chunk.aborted;
    const attempt = new Attempt(chunk.trx, chunk.outbox.outbox);
    const ms = this.options.handlerTimeoutMs;
    chunk.attempts.add(attempt);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        fn(attempt),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            attempt.end(`it ran longer than handlerTimeoutMs (${ms} ms)`);
            reject(new HandlerTimeoutError(ms));
          }, ms);
        }),
      ]);
      attempt.end('it returned');
    } catch (error) {
      attempt.end(error instanceof HandlerTimeoutError ? 'it timed out' : 'it failed');
      throw error;
    } finally {
      clearTimeout(timer);
      chunk.attempts.delete(attempt);
    }
  }

  /**
   * Ends the chunk's connection: user code is refused from here on, and the backend is
   * terminated, which cancels a running statement and rolls the transaction back; the pool
   * discards the dead connection instead of handing it out again.
   */
  private async endConnection(chunk: OpenChunk, why: string): Promise<void> {
    for (const a of chunk.attempts) a.end(`its transaction was given up (${why})`);
    const backend = chunk.backend;
    if (backend === undefined) return;
    chunk.backend = undefined;
    try {
      const end = sql`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_get_activity(${backend.pid}::int) WHERE backend_start = ${backend.started}::timestamptz`;
      await this.side.run((db) => end.execute(db), SIDE_WAIT_MS);
    } catch (error) {
      this.options.logger.warn({ err: error, pid: backend.pid }, 'could not end the connection of a given-up transaction; it rolls back when its running statement ends');
    }
  }

  /**
   * Before a transaction whose handler threw is rolled back: one statement through the same
   * connection queue, so whatever the handler issued before it ended runs (and is rolled back)
   * before the ROLLBACK, never after it.
   */
  private async barrier(chunk: OpenChunk): Promise<void> {
    for (const a of chunk.attempts) a.end('its transaction is rolled back');
    if (chunk.trx === undefined) return;
    await sql`SELECT 1`.execute(chunk.trx).catch(() => undefined);
  }

  /** A handler alone in its transaction threw: the transaction was rolled back; its attempt was counted before it started. */
  private async afterFailure(aborted: AbortTransaction, event: NonNullable<AbortTransaction['event']>, empty: ChunkOutcome, topic: string, partition: number): Promise<ChunkOutcome> {
    try {
      const run = event.run;
      if (run !== undefined) {
        // Ran in this consumer's run: the event gets a count of its own, and the run ends here.
        this.dropRun(topic, partition, run);
        await this.side.run((db) => this.attemptLog.addAttempt(db, topic, partition, { offset: event.offset, eventId: event.id }, { error: errorText(aborted.inner), durable: true, forgetRun: run }), SIDE_WAIT_MS);
      } else {
        await this.side.run((db) => this.attemptLog.setError(db, topic, partition, event.offset, errorText(aborted.inner)), SIDE_WAIT_MS);
      }
    } catch (error) {
      this.options.logger.debug({ err: error, topic, partition, offset: event.offset }, 'could not record the error of a failed attempt');
    }
    return { ...empty, settled: event.index, failed: { index: event.index, error: aborted.inner, attempt: event.attempt, exhausted: false, at: aborted.at } };
  }

  /** A handler timed out: that counts as a failed attempt of its event, recorded outside the rolled-back transaction. */
  private async afterTimeout(aborted: AbortTransaction, recorded: Recorded | undefined, empty: ChunkOutcome, firstIndex: number, topic: string, partition: number): Promise<ChunkOutcome> {
    const o = this.options;
    const text = errorText(aborted.inner);
    const event = aborted.event;
    if (event === undefined) {
      // A batch handler: its run stays recorded, so its events run one per transaction next.
      o.logger.warn({ topic, partition, err: aborted.inner }, 'batch handler timed out; the events of this run are retried one per transaction');
      return { ...empty, settled: 0, failed: { index: firstIndex, error: aborted.inner, attempt: 1, exhausted: false, at: aborted.at } };
    }
    try {
      const run = event.run;
      if (run !== undefined) {
        this.dropRun(topic, partition, run);
        await this.side.run((db) => this.attemptLog.addAttempt(db, topic, partition, { offset: event.offset, eventId: event.id }, { error: text, durable: false, forgetRun: run }), SIDE_WAIT_MS);
      } else if (event.alone) {
        await this.side.run((db) => this.attemptLog.setError(db, topic, partition, event.offset, text), SIDE_WAIT_MS);
      } else {
        const forget = recorded?.kind === 'run' ? { forgetRun: recorded } : {};
        await this.side.run((db) => this.attemptLog.addAttempt(db, topic, partition, { offset: event.offset, eventId: event.id }, { error: text, durable: false, ...forget }), SIDE_WAIT_MS);
      }
    } catch (error) {
      o.logger.warn({ err: error, topic, partition, offset: event?.offset }, 'could not record the time-out; it counts when the next run starts');
    }
    o.logger.warn({ topic, partition, offset: event.offset, eventId: event.id, attempt: event.attempt, maxAttempts: o.maxAttempts }, text);
    return {
      ...empty,
      settled: 0,
      failed: { index: event.index, error: aborted.inner, attempt: event.attempt, exhausted: o.onFailure === 'dead-letter' && event.attempt >= o.maxAttempts, at: aborted.at },
    };
  }

  /** Forgets (in memory) this consumer's run of the partition if it is `run`. */
  private dropRun(topic: string, partition: number, run: Run): void {
    const key = `${topic}:${partition}`;
    const own = this.runs.get(key);
    if (own !== undefined && own.first === run.first && own.last === run.last) this.runs.delete(key);
  }

  /** The transaction failed for a reason that is not the handlers' (database, stop): the attempt recorded for it does not count. */
  private async takeBack(recorded: Recorded, topic: string, partition: number, log: ChunkProcessorLogger): Promise<void> {
    try {
      const r = recorded;
      if (r.kind === 'run') this.dropRun(topic, partition, r);
      await this.side.run((db) => (r.kind === 'event' ? this.attemptLog.takeBack(db, topic, partition, r.offset) : this.attemptLog.forgetRun(db, topic, partition, r.first, r.last)), SIDE_WAIT_MS);
    } catch (error) {
      log.debug({ err: error }, 'could not take back the attempt recorded for a failed transaction');
    }
  }
}

type ChunkProcessorLogger = ResolvedOptions<unknown>['logger'];
