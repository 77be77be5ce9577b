import type { RawMessage } from './kafka-adapter';

/** Why a message has no usable event id. */
export type InvalidIdReason = 'missing' | 'empty' | 'ambiguous' | 'not-utf8' | 'contains-nul' | 'too-long';

/**
 * Where an event id comes from: `producer` (a header or `fromMessage`: the sender chose it) or
 * `derived` (made by the library from the record's coordinates). The two never share keys.
 */
export type IdOrigin = 'producer' | 'derived';

/** The value that was refused as an event id: its bytes, or each value of a repeated header. */
export type RefusedIdValue = string | Buffer | ReadonlyArray<string | Buffer>;

/** The outcome of reading an event id: a value, never an exception. */
export type EventIdResult =
  | { ok: true; id: string; origin: IdOrigin }
  | { ok: false; reason: InvalidIdReason; detail: string; refused?: RefusedIdValue };

/**
 * Where event ids come from:
 * - `{ header: 'event-id' }` (default): a header set by the producer;
 * - `{ fromMessage: fn }`: a function of the message (e.g. a field of the payload);
 * - `{ coordinates: true }`: `topic/partition/offset`. This only recognises *redeliveries* of
 *   the same record; a producer that sends the same event twice creates two records with two
 *   ids, so it does NOT deduplicate producer retries. Prefer a producer-assigned id.
 */
export type EventIdSource = { header: string } | { fromMessage: (message: RawMessage) => string | Buffer | null | undefined } | { coordinates: true };

const decoder = new TextDecoder('utf-8', { fatal: true });

function decode(value: string | Buffer, maxBytes: number): EventIdResult {
  let id: string;
  if (Buffer.isBuffer(value)) {
    if (value.length > maxBytes) return { ok: false, reason: 'too-long', detail: `event id is ${value.length} bytes; the limit is ${maxBytes}`, refused: value };
    try {
      id = decoder.decode(value);
    } catch {
      return { ok: false, reason: 'not-utf8', detail: 'event id is not valid UTF-8', refused: value };
    }
  } else {
    id = value;
  }
  if (id.length === 0) return { ok: false, reason: 'empty', detail: 'event id is empty', refused: value };
  if (id.includes('\u0000')) return { ok: false, reason: 'contains-nul', detail: 'event id contains a NUL character', refused: value };
  const bytes = Buffer.byteLength(id, 'utf8');
  if (bytes > maxBytes) return { ok: false, reason: 'too-long', detail: `event id is ${bytes} bytes; the limit is ${maxBytes}`, refused: value };
  return { ok: true, id, origin: 'producer' };
}

/** `topic/partition/offset`: the key the library derives for a record (origin `derived`). */
export function coordinatesOf(message: RawMessage): string {
  return `${message.topic}/${message.partition}/${message.offset}`;
}

/** Reads and validates the event id of `message`. Never invents one; coordinates are `derived`, never a producer id. */
export function readEventId(message: RawMessage, source: EventIdSource, maxBytes: number): EventIdResult {
  if ('coordinates' in source) return { ok: true, id: coordinatesOf(message), origin: 'derived' };
  if ('fromMessage' in source) {
    let value: string | Buffer | null | undefined;
    try {
      value = source.fromMessage(message);
    } catch (error) {
      return { ok: false, reason: 'missing', detail: `the event id function threw: ${error instanceof Error ? error.message : String(error)}` };
    }
    if (value === null || value === undefined) return { ok: false, reason: 'missing', detail: 'the event id function returned nothing' };
    return decode(value, maxBytes);
  }
  const raw = message.headers[source.header];
  if (raw === undefined || raw === null) return { ok: false, reason: 'missing', detail: `header "${source.header}" is missing` };
  if (Array.isArray(raw)) {
    const values = raw.map((v) => (Buffer.isBuffer(v) ? v : Buffer.from(v, 'utf8')));
    const first = values[0];
    if (first === undefined) return { ok: false, reason: 'missing', detail: `header "${source.header}" is missing` };
    if (!values.every((v) => v.equals(first))) return { ok: false, reason: 'ambiguous', detail: `header "${source.header}" is repeated with different values`, refused: raw };
    return decode(first, maxBytes);
  }
  return decode(raw, maxBytes);
}
