import { createHash } from 'node:crypto';
import { EVENT_ID_HEADER, MAX_EVENT_ID_BYTES, type Outbox, type OutboxMessage } from '@effectively/core';
import { sql, type Transaction } from 'kysely';
import type { IdOrigin, RefusedIdValue } from './event-id';
import type { RawMessage } from './kafka-adapter';
import { isStorableText, storableText } from './storable-text';

const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * A header value as outbox text: clean UTF-8 stays as it is; anything else (binary, NUL, which
 * Postgres text cannot hold) becomes `base64:<bytes>`, so nothing is silently altered.
 * Repeated headers keep their first value.
 */
function headerToString(value: RawMessage['headers'][string]): string | undefined {
  if (value === undefined) return undefined;
  const first = Array.isArray(value) ? value[0] : value;
  if (first === undefined) return undefined;
  return bytesToText(first);
}

/** Bytes as storable text: UTF-8 without NUL as it is, anything else as `base64:<bytes>`. */
function bytesToText(value: string | Buffer): string {
  const bytes = Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8');
  try {
    const text = decoder.decode(bytes);
    if (!text.includes('\u0000')) return text;
  } catch {
    /* not UTF-8 */
  }
  return `base64:${bytes.toString('base64')}`;
}

/** A refused event id as header text: each value escaped by {@link bytesToText}; a repeated header as a JSON array of them. */
function refusedToText(value: RefusedIdValue): string {
  return typeof value === 'string' || Buffer.isBuffer(value) ? bytesToText(value) : JSON.stringify(value.map(bytesToText));
}

/**
 * The dead-letter copy of `message`: original key and value, original headers, and `dlq-*`
 * headers saying why, from where, and which group gave up. Its event id is derived from the
 * group and the record, so re-running the transaction cannot publish it twice.
 *
 * The original `event-id` header is not copied as such (the copy has its own event id): a usable
 * id is in `dlq-event-id` (with `dlq-event-id-origin`: `producer`, or `derived` for a key made
 * from coordinates), and an id that was refused is kept in `dlq-refused-event-id`, escaped as
 * `base64:<bytes>` when it is not clean UTF-8 (a repeated header: a JSON array of its values).
 */
export function deadLetterMessage(
  message: RawMessage,
  options: { group: string; topic: string; eventId: string; origin: IdOrigin; refusedId?: RefusedIdValue; reason: string; error: string; attempts: number },
): OutboxMessage {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers)) {
    if (name === EVENT_ID_HEADER) continue; // the copy gets its own event id; the original is in dlq-event-id or dlq-refused-event-id
    const text = headerToString(value);
    // A name that is not storable text (NUL) is kept as `base64:<its UTF-8 bytes>`, like values.
    if (text !== undefined) headers[isStorableText(name) && name !== '' ? name : `base64:${Buffer.from(name, 'utf8').toString('base64')}`] = text;
  }
  const derived = `dlq:${options.group}:${message.topic}/${message.partition}/${message.offset}:${options.reason}`;
  return {
    // A long group and topic can make the derived id too long for the outbox: then its hash, as deterministic.
    eventId: Buffer.byteLength(derived) <= MAX_EVENT_ID_BYTES ? derived : `dlq:sha256:${createHash('sha256').update(derived).digest('hex')}`,
    topic: options.topic,
    key: message.key,
    value: message.value,
    headers: {
      ...headers,
      'dlq-reason': options.reason,
      'dlq-error': storableText(options.error.slice(0, 2000)),
      'dlq-event-id': headerToString(options.eventId) ?? '',
      'dlq-event-id-origin': options.origin,
      ...(options.refusedId === undefined ? {} : { 'dlq-refused-event-id': refusedToText(options.refusedId) }),
      'dlq-group': options.group,
      'dlq-original-topic': message.topic,
      'dlq-original-partition': String(message.partition),
      'dlq-original-offset': message.offset,
      'dlq-attempts': String(options.attempts),
    },
  };
}

/** The headers that say which dead letter a message is: same group, record and reason = the same dead letter. */
const IDENTITY = ['dlq-group', 'dlq-original-topic', 'dlq-original-partition', 'dlq-original-offset', 'dlq-reason'] as const;

/**
 * Dead letters whose id the outbox reported as already taken (`taken`, from the write of the
 * chunk's rows). The outbox keeps one row per event id, and a dead letter's id is derived
 * (`dlq:<group>:<topic>/<partition>/<offset>:<reason>`), so a row a producer published under that
 * very id (through `ctx.outbox` or `createOutbox`) would make the dead letter vanish. A row that
 * is the same dead letter (a redelivered record) keeps it written once; any other row holding the
 * id makes the dead letter take another derived id (`dlq:sha256:<hash of it and a round>`),
 * written through `outbox` (unbuffered), until one is free.
 */
export async function rekeyTakenDeadLetters(trx: Transaction<unknown>, outbox: Outbox, schema: string, letters: readonly OutboxMessage[], taken: readonly string[]): Promise<void> {
  let takenIds = new Set(taken);
  let pending = letters.filter((m) => m.eventId !== undefined && takenIds.has(m.eventId));
  for (let round = 1; pending.length > 0; round++) {
    const { rows } = await sql<{ event_id: string; headers: Record<string, string> }>`
      SELECT event_id, headers FROM ${sql.id(schema, 'outbox')} WHERE event_id = ANY(${pending.map((m) => m.eventId)}::text[])`.execute(trx);
    const holders = new Map(rows.map((r) => [r.event_id, r.headers]));
    const rekeyed = pending
      .filter((m) => {
        const holder = holders.get(m.eventId ?? '');
        return holder !== undefined && !IDENTITY.every((h) => holder[h] === m.headers?.[h]);
      })
      .map((m) => {
        const base = IDENTITY.map((h) => m.headers?.[h] ?? '').join('\u0000');
        return { ...m, eventId: `dlq:sha256:${createHash('sha256').update(`${base}\u0000${round}`).digest('hex')}` };
      });
    if (rekeyed.length === 0) return;
    takenIds = new Set((await outbox.publish(trx, rekeyed)).alreadyPublished);
    pending = rekeyed.filter((m) => takenIds.has(m.eventId));
  }
}
