import { sql, type Transaction } from 'kysely';
import { childLogger, createOutboxBuffer, openTelemetryTracing, runWithTraceContext, type OutboxBuffer, type OutboxMessage } from '@effectively/core';
import type { ResolvedOptions } from './config';
import { classify, idKey, type Classified } from './classify';
import { deadLetterMessage } from './dead-letter';
import { FencedError, HandlerTimeoutError, isTransientDatabaseError } from './errors';
import type { HookContext } from './hooks';
import type { RawMessage } from './kafka-adapter';
import { ProcessedEventStore, type ClaimRow, type EventKey, type Redriven } from './store';
import { ChunkTrace } from './tracing';

const tracing = openTelemetryTracing('@effectively/kafka');

/** What one chunk transaction achieved. */
export interface ChunkOutcome {
  /** How many leading messages of the chunk are settled (processed, duplicate or dead-lettered) and committed. */
  settled: number;
  /** The first message that failed and must be retried, with its error. */
  failed?: { index: number; error: unknown };
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

/** A handler error that must abort the whole transaction (transient DB error, time-out). */
class AbortTransaction extends Error {
  constructor(
    readonly inner: unknown,
    readonly index: number | undefined,
  ) {
    super('abort transaction');
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function withTimeout<R>(promise: Promise<R>, ms: number): Promise<R> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HandlerTimeoutError(ms)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Runs one transaction over a contiguous chunk of one partition: claim every id with one
 * multi-row insert, skip duplicates, run the handlers (each event in a savepoint), dead-letter
 * what is exhausted or rejected, release the claims of what failed, commit.
 */
export class ChunkProcessor<T> {
  private readonly store: ProcessedEventStore;

  constructor(private readonly options: ResolvedOptions<T>) {
    this.store = new ProcessedEventStore(options.schema, options.groupId);
  }

  get processedEvents(): ProcessedEventStore {
    return this.store;
  }

  /**
   * @param attempts prior failed attempts per offset (updated in place on failure)
   * @param epoch the partition epoch this member holds, when fencing
   */
  async run(messages: RawMessage[], attempts: Map<string, number>, epoch: string | undefined): Promise<ChunkOutcome> {
    const trace = new ChunkTrace(tracing, this.options.groupId, messages);
    try {
      const outcome = await this.runTransaction(messages, attempts, epoch, trace);
      trace.end('committed', { ...outcome, retry: outcome.failed !== undefined });
      return outcome;
    } catch (error) {
      trace.end(error instanceof FencedError ? 'fenced' : 'rolled_back', { processed: 0, duplicates: 0, conflicts: 0, deadLettered: 0, retry: true }, error);
      throw error;
    }
  }

  private async runTransaction(messages: RawMessage[], attempts: Map<string, number>, epoch: string | undefined, trace: ChunkTrace): Promise<ChunkOutcome> {
    const o = this.options;
    const first = messages[0] as RawMessage;
    const last = messages[messages.length - 1] as RawMessage;
    const classified = messages.map((m) => classify(m, o));
    trace.eventId((classified[0] as Classified<T>).id, messages.length);
    // Within the chunk, only the first copy of an id is a candidate; later copies are duplicates.
    const firstIndexOf = new Map<string, number>();
    classified.forEach((c, i) => {
      if (!firstIndexOf.has(c.key)) firstIndexOf.set(c.key, i);
    });
    const candidates = classified.filter((c, i) => firstIndexOf.get(c.key) === i);
    const hook: HookContext = { topic: first.topic, partition: first.partition, firstOffset: first.offset, lastOffset: last.offset, claimed: [] };
    const outcome: ChunkOutcome = { settled: messages.length, processed: 0, duplicates: 0, conflicts: 0, deadLettered: 0, deadLetteredDuplicates: 0, redriven: 0, hook };
    const log = childLogger(o.logger, { topic: first.topic, partition: first.partition });

    try {
      await o.db.transaction().execute(async (trx) => {
        // Handlers' outbox rows are queued and written in one statement just before COMMIT.
        const outbox = createOutboxBuffer({ schema: o.schema, ...(o.traceContext !== undefined ? { traceContext: o.traceContext } : {}) });
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
        // One round trip: timeouts, fence check (a share lock on the fence row), claim, stored hashes.
        const opened = await this.store.open(trx, {
          lockTimeoutMs: o.lockTimeoutMs,
          statementTimeoutMs: o.statementTimeoutMs,
          ...(epoch === undefined ? {} : { fence: { topic: first.topic, partition: first.partition, epoch } }),
          rows,
        });
        if (!opened.held) throw new FencedError(first.topic, first.partition);
        const claimed = opened.claimed;
        const stored = opened.stored;
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
          dlq.push(deadLetterMessage(r.message, { group: o.groupId, topic: o.deadLetterTopic(r.message.topic), eventId: r.id, origin: r.origin, ...(r.kind === 'rejected' && r.refusedId !== undefined ? { refusedId: r.refusedId } : {}), reason: r.reason, error: r.error, attempts: 0 }));
        }

        const events = fresh.filter((c): c is Extract<Classified<T>, { kind: 'event' }> => c.kind === 'event');
        const position = new Map(messages.map((m, i) => [m.offset, i]));
        const unsettled = await this.handle(trx, outbox, events, attempts, dlq, outcome, log, (m) => position.get(m.offset) as number, trace);
        const unsettledKeys = new Set(unsettled.map((k) => idKey(k.origin, k.eventId)));
        outcome.redriven = [...redriven.keys()].filter((k) => !unsettledKeys.has(k)).length;
        if (redriven.size > 0) log.warn({ redriven: outcome.redriven, eventIds: [...redriven.values()].map((r) => r.eventId) }, 'dead-lettered events re-driven');
        await this.store.restore(trx, [...redriven.values()].filter((r) => unsettledKeys.has(idKey(r.origin, r.eventId))));
        const released = unsettled.filter((k) => !redriven.has(idKey(k.origin, k.eventId)));
        if (released.length > 0) await this.store.release(trx, released);
        if (dlq.length > 0) await outbox.outbox.publish(trx, dlq);
        await outbox.flush(trx);
        await o.hooks.beforeDbCommit?.(hook);
      });
    } catch (error) {
      if (error instanceof AbortTransaction) {
        if (error.index !== undefined && !isTransientDatabaseError(error.inner)) {
          const offset = (messages[error.index] as RawMessage).offset;
          attempts.set(offset, (attempts.get(offset) ?? 0) + 1);
          trace.rolledBack(error.inner);
          return { ...outcome, settled: error.index, failed: { index: error.index, error: error.inner }, processed: 0, duplicates: 0, conflicts: 0, deadLettered: 0, deadLetteredDuplicates: 0, redriven: 0 };
        }
        throw error.inner;
      }
      throw error;
    }
    return outcome;
  }

  /** Runs the handlers; returns the ids whose claims must be released (failed, or not reached). */
  private async handle(
    trx: Transaction<unknown>,
    outbox: OutboxBuffer,
    events: Array<Extract<Classified<T>, { kind: 'event' }>>,
    attempts: Map<string, number>,
    dlq: OutboxMessage[],
    outcome: ChunkOutcome,
    log: ChunkProcessorLogger,
    indexOf: (message: RawMessage) => number,
    trace: ChunkTrace,
  ): Promise<EventKey[]> {
    const o = this.options;
    if (events.length === 0) return [];
    // Per-event mode: a chunk is one message, so the transaction holds nothing but this event.
    const single = o.mode === 'event';
    if (o.batchHandler !== undefined && !single && events.every((e) => (attempts.get(e.message.offset) ?? 0) === 0)) {
      await sql`SAVEPOINT effectively_batch`.execute(trx);
      const mark = outbox.mark();
      try {
        const batchHandler = o.batchHandler;
        await withTimeout(trace.run(() => batchHandler(events.map((e) => e.event), { trx, outbox: outbox.outbox, logger: log })), o.handlerTimeoutMs);
        // No RELEASE: nothing else can fail back to this savepoint, and COMMIT releases it (one round trip less).
        outcome.processed += events.length;
        return [];
      } catch (error) {
        if (isTransientDatabaseError(error) || error instanceof HandlerTimeoutError) throw new AbortTransaction(error, undefined);
        await sql`ROLLBACK TO SAVEPOINT effectively_batch`.execute(trx);
        outbox.rollbackTo(mark);
        log.warn({ err: error, events: events.length }, 'batch handler failed; handling the chunk one event at a time');
      }
    }
    const unsettled: EventKey[] = [];
    let halted = false;
    for (const e of events) {
      if (halted) {
        unsettled.push({ origin: e.origin, eventId: e.id });
        continue;
      }
      const offset = e.message.offset;
      const prior = attempts.get(offset) ?? 0;
      const eventLog = childLogger(log, { offset, eventId: e.id });
      // A savepoint keeps the rest of the transaction when this handler fails. Alone in its
      // transaction, an event needs one only when a failure is dead-lettered in the same
      // transaction (its last attempt); otherwise a failure rolls the whole transaction back,
      // which also releases the claim.
      const savepoint = !single || (prior + 1 >= o.maxAttempts && o.onFailure === 'dead-letter');
      if (savepoint) await sql`SAVEPOINT effectively_event`.execute(trx);
      const mark = outbox.mark();
      try {
        const handler = o.handler;
        await withTimeout(
          trace.run(() => runWithTraceContext(trace.context(e.message), () => handler(e.event, { trx, outbox: outbox.outbox, logger: eventLog, attempt: prior + 1 }))),
          o.handlerTimeoutMs,
        );
        if (savepoint && !single) await sql`RELEASE SAVEPOINT effectively_event`.execute(trx);
        outcome.processed++;
        attempts.delete(offset);
      } catch (error) {
        if (isTransientDatabaseError(error) || error instanceof HandlerTimeoutError) {
          throw new AbortTransaction(error, indexOf(e.message));
        }
        if (!savepoint) {
          trace.handlerFailed(e.message, e.id, prior + 1, error);
          eventLog.warn({ err: error, attempt: prior + 1, maxAttempts: o.maxAttempts }, 'handler failed; will retry');
          throw new AbortTransaction(error, indexOf(e.message));
        }
        await sql`ROLLBACK TO SAVEPOINT effectively_event`.execute(trx);
        outbox.rollbackTo(mark);
        const spent = prior + 1;
        trace.handlerFailed(e.message, e.id, spent, error);
        if (spent >= o.maxAttempts && o.onFailure === 'dead-letter') {
          outcome.deadLettered++;
          attempts.delete(offset);
          eventLog.error({ err: error, attempts: spent }, 'handler failed on every attempt; dead-lettered');
          trace.deadLettered(e.message, e.id, 'handler-failed');
          await this.store.markDeadLettered(trx, { origin: e.origin, eventId: e.id }, errorText(error), spent);
          dlq.push(deadLetterMessage(e.message, { group: o.groupId, topic: o.deadLetterTopic(e.message.topic), eventId: e.id, origin: e.origin, reason: 'handler-failed', error: errorText(error), attempts: spent }));
          continue;
        }
        attempts.set(offset, spent);
        eventLog.warn({ err: error, attempt: spent, maxAttempts: o.maxAttempts }, 'handler failed; will retry');
        unsettled.push({ origin: e.origin, eventId: e.id });
        outcome.failed ??= { index: indexOf(e.message), error };
        if (o.onFailure === 'halt') halted = true;
      }
    }
    if (outcome.failed !== undefined) outcome.settled = outcome.failed.index;
    return unsettled;
  }

}

type ChunkProcessorLogger = ResolvedOptions<unknown>['logger'];

