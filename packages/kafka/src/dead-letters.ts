import { assertIdentifier, createOutbox, EVENT_ID_HEADER, InvalidConfigError, loggerOption, untyped, uuidv7, type Logger, type OutboxMessage } from '@effectively/core';
import type { Kysely } from 'kysely';
import type { IdOrigin } from './event-id';
import { clusterTopics, readTopicToEnd, type KafkaClientSettings, type RawMessage } from './kafka-adapter';
import { REDRIVE_HEADER } from './redrive';

/** A dead letter as it sits in a dead-letter topic, with what its `dlq-*` headers say. */
export interface DeadLetter {
  /** Where the dead letter is: the dead-letter topic, its partition and offset. */
  topic: string;
  partition: number;
  offset: string;
  /** When it was written to the dead-letter topic, ms since the epoch. */
  timestamp: number;
  /** `handler-failed`, `invalid-event-id`, `malformed-payload`, `tombstone`, `conflicting-duplicate`. */
  reason: string;
  error: string;
  /** The consumer group that gave up on it. */
  group: string;
  /** The id the group recorded, and where it came from (`derived`: made from coordinates, not a producer id). */
  eventId: string;
  eventIdOrigin: IdOrigin;
  originalTopic: string;
  originalPartition: number;
  originalOffset: string;
  attempts: number;
  key: Buffer | null;
  value: Buffer | null;
  /** The original record's headers as the dead letter kept them (text; `dlq-*` and the dead letter's own `event-id` left out). */
  headers: Record<string, string>;
}

/** Which dead letters to take; every given field must match (lists: any of). */
export interface DeadLetterFilter {
  /** Original topics. */
  topics?: readonly string[];
  eventIds?: readonly string[];
  reasons?: readonly string[];
  groups?: readonly string[];
  /** Dead-lettered at or after this time. */
  since?: Date;
  /** Dead-lettered before this time. */
  until?: Date;
}

/** Where dead letters are read from. */
export interface DeadLetterSource {
  brokers: string[];
  /** The dead-letter topics to read (e.g. `orders.dlq`). */
  deadLetterTopics: readonly string[];
  filter?: DeadLetterFilter;
  /** Extra kafkajs client settings (ssl, sasl). */
  kafka?: KafkaClientSettings['kafka'];
  logger?: Logger;
  /** Give up reading a topic after this long; default 60 s. */
  readTimeoutMs?: number;
}

const text = (value: RawMessage['headers'][string]): string | undefined => {
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined ? undefined : first.toString();
};

/** The dead letter `message` of a dead-letter topic describes, or undefined when it is not one of ours (no `dlq-reason`). */
export function toDeadLetter(message: RawMessage): DeadLetter | undefined {
  const h = (name: string): string | undefined => text(message.headers[name]);
  const reason = h('dlq-reason');
  if (reason === undefined) return undefined;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers)) {
    const v = text(value);
    // `event-id` here is the dead letter's own id (the original is dlq-event-id).
    if (!name.startsWith('dlq-') && name !== EVENT_ID_HEADER && v !== undefined) headers[name] = v;
  }
  const eventId = h('dlq-event-id') ?? '';
  // Dead letters written before ids had an origin: their derived keys have a fixed form.
  const origin = h('dlq-event-id-origin') === 'derived' || (h('dlq-event-id-origin') === undefined && reason === 'invalid-event-id') ? 'derived' : 'producer';
  return {
    topic: message.topic,
    partition: message.partition,
    offset: message.offset,
    timestamp: Number(message.timestamp),
    reason,
    error: h('dlq-error') ?? '',
    group: h('dlq-group') ?? '',
    eventId,
    eventIdOrigin: origin,
    originalTopic: h('dlq-original-topic') ?? '',
    originalPartition: Number(h('dlq-original-partition') ?? -1),
    originalOffset: h('dlq-original-offset') ?? '',
    attempts: Number(h('dlq-attempts') ?? 0),
    key: message.key,
    value: message.value,
    headers,
  };
}

function matches(letter: DeadLetter, filter: DeadLetterFilter): boolean {
  const inList = (list: readonly string[] | undefined, value: string): boolean => list === undefined || list.includes(value);
  return (
    inList(filter.topics, letter.originalTopic) &&
    inList(filter.eventIds, letter.eventId) &&
    inList(filter.reasons, letter.reason) &&
    inList(filter.groups, letter.group) &&
    (filter.since === undefined || letter.timestamp >= filter.since.getTime()) &&
    (filter.until === undefined || letter.timestamp < filter.until.getTime())
  );
}

/**
 * Reads the dead-letter topics to their current end (a throw-away consumer group that commits
 * nothing) and returns the dead letters that match `filter`, in topic, partition, offset order.
 *
 * @throws InvalidConfigError when no dead-letter topic is given, one does not exist, or `since` is not before `until`; kafkajs errors when the cluster cannot be read.
 */
export async function listDeadLetters(options: DeadLetterSource): Promise<DeadLetter[]> {
  if (options.deadLetterTopics.length === 0) throw new InvalidConfigError('deadLetterTopics must name at least one dead-letter topic (e.g. "orders.dlq").');
  const logger = loggerOption(options.logger, 'listDeadLetters options.logger');
  const settings = { brokers: options.brokers, logger, kafka: options.kafka, ...(options.readTimeoutMs === undefined ? {} : { timeoutMs: options.readTimeoutMs }) };
  // A misspelt topic is refused before anything is read (reading it would fail deep in kafkajs, or wait).
  const existing = new Set(await clusterTopics(settings));
  const missing = options.deadLetterTopics.filter((t) => !existing.has(t));
  if (missing.length > 0) {
    throw new InvalidConfigError(
      `dead-letter topic${missing.length === 1 ? '' : 's'} ${missing.map((t) => JSON.stringify(t)).join(', ')} ${missing.length === 1 ? 'does' : 'do'} not exist on the cluster: check the name (a consumer's dead-letter topic is <topic>.dlq unless its deadLetterTopic option says otherwise). Nothing was read or written.`,
    );
  }
  if (options.filter?.since !== undefined && options.filter.until !== undefined && !(options.filter.since.getTime() < options.filter.until.getTime())) {
    throw new InvalidConfigError(`filter.since (${options.filter.since.toISOString()}) is not before filter.until (${options.filter.until.toISOString()}): the range is empty.`);
  }
  const out: DeadLetter[] = [];
  for (const topic of options.deadLetterTopics) {
    const messages = await readTopicToEnd(settings, topic);
    for (const m of messages) {
      const letter = toDeadLetter(m);
      if (letter !== undefined && matches(letter, options.filter ?? {})) out.push(letter);
    }
  }
  return out;
}

/** Options of {@link replayDeadLetters}. */
export interface ReplayOptions<DB> extends DeadLetterSource {
  /** The database whose outbox the replay is written to (the relay publishes it). */
  db: Kysely<DB>;
  /** Schema with effectively's tables; default `effectively`. */
  schema?: string;
  /** Write the replay; default false (a dry run: nothing is written, the result says what would be). */
  execute?: boolean;
  /**
   * This replay's re-drive id (the `effectively-redrive` header); default a new UUIDv7. Running
   * again with the same id re-sends nothing that a consumer would apply twice.
   */
  redriveId?: string;
}

/** What {@link replayDeadLetters} did (or, in a dry run, would do). */
export interface ReplayResult {
  redriveId: string;
  dryRun: boolean;
  /** Dead letters replayed: one per (original topic, event id), the latest. */
  replayed: DeadLetter[];
  /** Matching dead letters left out, and why. */
  skipped: Array<{ letter: DeadLetter; why: string }>;
  /** Rows written to the outbox (0 in a dry run); ids still pending in the outbox are not written again. */
  written: number;
}

/**
 * Replays chosen dead letters to their original topic with their original key, value, headers
 * and event id, plus the header `effectively-redrive: <redriveId>`, through the outbox in one
 * transaction (so the replay itself is written once and published by the relay). An idempotent
 * consumer applies a re-driven event once if its group dead-lettered it; a group that applied it
 * skips it as a duplicate. Dead letters without a producer id (`invalid-event-id`, derived keys)
 * and conflicting duplicates (the first payload was applied) are skipped. Dry run by default.
 *
 * @throws InvalidConfigError / InvalidIdentifierError on bad options, before anything is written.
 */
export async function replayDeadLetters<DB>(options: ReplayOptions<DB>): Promise<ReplayResult> {
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const redriveId = options.redriveId ?? uuidv7();
  if (redriveId.length === 0 || Buffer.byteLength(redriveId) > 255 || redriveId.includes('\u0000')) throw new InvalidConfigError('redriveId must be 1-255 bytes of text without NUL.');
  const letters = await listDeadLetters(options);
  const skipped: ReplayResult['skipped'] = [];
  const latest = new Map<string, DeadLetter>();
  for (const letter of letters) {
    if (letter.eventIdOrigin !== 'producer' || letter.reason === 'invalid-event-id') skipped.push({ letter, why: 'no producer event id (its key was derived from coordinates): replaying it cannot be recognised as the same event' });
    else if (letter.reason === 'conflicting-duplicate') skipped.push({ letter, why: 'a conflicting duplicate: the first payload with this id was applied' });
    else if (letter.originalTopic === '') skipped.push({ letter, why: 'no dlq-original-topic header' });
    else {
      const key = `${letter.originalTopic}\u0000${letter.eventId}`;
      const earlier = latest.get(key);
      if (earlier !== undefined) skipped.push({ letter: earlier, why: 'a later dead letter of the same event is replayed instead' });
      latest.set(key, letter);
    }
  }
  const replayed = [...latest.values()];
  const result: ReplayResult = { redriveId, dryRun: options.execute !== true, replayed, skipped, written: 0 };
  if (options.execute !== true || replayed.length === 0) return result;
  const messages: OutboxMessage[] = replayed.map((l) => ({
    topic: l.originalTopic,
    key: l.key,
    value: l.value,
    eventId: l.eventId,
    headers: { ...l.headers, [REDRIVE_HEADER]: redriveId },
  }));
  const outbox = createOutbox({ schema });
  const published = await untyped(options.db).transaction().execute((trx) => outbox.publish(trx, messages));
  loggerOption(options.logger, 'replayDeadLetters options.logger').warn({ redriveId, replayed: replayed.length, written: published.inserted }, 'dead letters replayed through the outbox');
  return { ...result, written: published.inserted };
}
