import type { RawMessage } from './kafka-adapter';

/** Why a message has no usable event id. */
export type InvalidIdReason = 'missing' | 'empty' | 'ambiguous' | 'not-utf8' | 'contains-nul' | 'too-long';

/** The outcome of reading an event id: a value, never an exception. */
export type EventIdResult = { ok: true; id: string } | { ok: false; reason: InvalidIdReason; detail: string };

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
    if (value.length > maxBytes) return { ok: false, reason: 'too-long', detail: `event id is ${value.length} bytes; the limit is ${maxBytes}` };
    try {
      id = decoder.decode(value);
    } catch {
      return { ok: false, reason: 'not-utf8', detail: 'event id is not valid UTF-8' };
    }
  } else {
    id = value;
  }
  if (id.length === 0) return { ok: false, reason: 'empty', detail: 'event id is empty' };
  if (id.includes('\u0000')) return { ok: false, reason: 'contains-nul', detail: 'event id contains a NUL character' };
  const bytes = Buffer.byteLength(id, 'utf8');
  if (bytes > maxBytes) return { ok: false, reason: 'too-long', detail: `event id is ${bytes} bytes; the limit is ${maxBytes}` };
  return { ok: true, id };
}

/** Reads and validates the event id of `message`. Never invents one. */
export function readEventId(message: RawMessage, source: EventIdSource, maxBytes: number): EventIdResult {
  if ('coordinates' in source) return { ok: true, id: `${message.topic}/${message.partition}/${message.offset}` };
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
    if (!values.every((v) => v.equals(first))) return { ok: false, reason: 'ambiguous', detail: `header "${source.header}" is repeated with different values` };
    return decode(first, maxBytes);
  }
  return decode(raw, maxBytes);
}
