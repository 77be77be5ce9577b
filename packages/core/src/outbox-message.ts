import { inspect } from 'node:util';
import { InvalidConfigError } from './errors';
import { encodeJson, loneSurrogateAt } from './outbox-json';
import { isTraceparent, type TraceContextProvider } from './trace-context';
import { uuidv7 } from './uuid';

/** The header that carries an outbox row's event id to Kafka; consumers deduplicate on it. */
export const EVENT_ID_HEADER = 'event-id';

/** Longest key accepted: with the topic it must fit a btree entry of the outbox's blocking index (2,704 bytes). */
export const MAX_KEY_BYTES = 1024;
/** Longest event id accepted, in UTF-8 bytes. */
export const MAX_EVENT_ID_BYTES = 512;

const TOPIC = /^[a-zA-Z0-9._-]{1,249}$/;
/** W3C tracestate: printable ASCII, at most 512 characters (https://www.w3.org/TR/trace-context/#tracestate-header). */
const TRACESTATE = /^[\x20-\x7E]{1,512}$/;

/** A checked outbox row, ready for the INSERT. */
export interface OutboxRow {
  eventId: string;
  topic: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

/** The fields of a message as an untyped caller may pass them; everything is checked. */
interface UncheckedMessage {
  topic?: unknown;
  key?: unknown;
  value?: unknown;
  headers?: unknown;
  eventId?: unknown;
}

function show(value: unknown): string {
  return inspect(value, { depth: 1, maxStringLength: 80, breakLength: Infinity });
}

function bytes(value: string | Uint8Array): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** Refuses text Postgres `text`/`jsonb` cannot hold as it is: NUL, and lone surrogates (not Unicode). */
function checkText(value: string, field: string, fix: string): void {
  if (value.includes('\u0000')) throw new InvalidConfigError(`${field} contains NUL (\\u0000), which Postgres cannot store in text; ${fix}.`);
  const at = loneSurrogateAt(value);
  if (at >= 0) throw new InvalidConfigError(`${field} has a lone UTF-16 surrogate at index ${at}, which is not Unicode text (it would be stored as U+FFFD or refused); ${fix}.`);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * Checks every field of one outbox message and turns it into a row, before anything is
 * written: topic (a Kafka topic name), key (string or bytes, at most {@link MAX_KEY_BYTES}),
 * value (bytes, string, or data encodable as JSON without loss), headers (names and string
 * values without NUL or lone surrogates, stored as `jsonb`) and event id.
 *
 * @param where how errors name the message, e.g. `outbox message[2]`
 * @throws InvalidConfigError naming the field and what to do.
 */
export function toOutboxRow(input: unknown, where: string, trace: TraceContextProvider): OutboxRow {
  const reading = { field: where };
  try {
    return readRow(input, where, trace, reading);
  } catch (error) {
    if (error instanceof InvalidConfigError) throw error;
    // A getter that throws, a revoked Proxy: still an error naming the field, never a raw TypeError.
    throw new InvalidConfigError(`${reading.field} could not be read (${error instanceof Error ? error.message : String(error)}); pass plain data.`);
  }
}

function readRow(input: unknown, where: string, trace: TraceContextProvider, reading: { field: string }): OutboxRow {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidConfigError(`${where} must be an object { topic, key, value, headers, eventId }, got ${show(input)}.`);
  }
  const m = input as UncheckedMessage;
  const topic = m.topic;
  if (typeof topic !== 'string' || !TOPIC.test(topic) || topic === '.' || topic === '..') {
    throw new InvalidConfigError(`${where}.topic ${show(topic)} is not a valid Kafka topic name: use 1-249 of a-z A-Z 0-9 . _ - (not "." or "..").`);
  }

  const eventId = m.eventId ?? uuidv7();
  if (typeof eventId !== 'string' || eventId === '' || Buffer.byteLength(eventId) > MAX_EVENT_ID_BYTES) {
    throw new InvalidConfigError(`${where}.eventId must be a non-empty string of at most ${MAX_EVENT_ID_BYTES} UTF-8 bytes (or absent for a new UUIDv7), got ${show(eventId)}.`);
  }
  checkText(eventId, `${where}.eventId`, 'derive the id from printable text (e.g. a hash of the input)');

  // No prototype: a header named "__proto__" is a header like any other.
  const headers = Object.create(null) as Record<string, string>;
  reading.field = `${where}.headers`;
  if (m.headers !== undefined && m.headers !== null) {
    if (!isPlainObject(m.headers)) {
      throw new InvalidConfigError(`${where}.headers must be an object of header name → string value, got ${show(m.headers)}.`);
    }
    const symbol = Object.getOwnPropertySymbols(m.headers)[0];
    if (symbol !== undefined) throw new InvalidConfigError(`${where} header name ${String(symbol)} is a symbol; header names are strings.`);
    for (const [name, value] of Object.entries(m.headers)) {
      const field = `${where}.headers[${JSON.stringify(name)}]`;
      if (name === '') throw new InvalidConfigError(`${where} header name "" is empty; give every header a name.`);
      checkText(name, `${where} header name ${JSON.stringify(name)}`, 'use a printable header name');
      if (name === EVENT_ID_HEADER) throw new InvalidConfigError(`${field}: the "${EVENT_ID_HEADER}" header is set from eventId; pass eventId instead.`);
      if (typeof value !== 'string') {
        throw new InvalidConfigError(`${field} must be a string, got ${show(value)}; headers are stored as JSON text, so convert the value (encode bytes e.g. as base64).`);
      }
      checkText(value, field, 'remove it or encode the value (e.g. base64)');
      headers[name] = value;
    }
  }

  reading.field = `${where}.value`;
  let value: Buffer | null;
  if (m.value === null) value = null;
  else if (m.value instanceof Uint8Array) value = bytes(m.value);
  else if (typeof m.value === 'string') {
    const at = loneSurrogateAt(m.value);
    if (at >= 0) throw new InvalidConfigError(`${where}.value has a lone UTF-16 surrogate at index ${at}, which UTF-8 cannot encode (it would be sent as U+FFFD); fix the string or pass the bytes as a Buffer.`);
    value = bytes(m.value);
  } else if (m.value === undefined) throw new InvalidConfigError(`${where}.value is missing; pass null for a tombstone.`);
  else {
    value = Buffer.from(encodeJson(m.value, `${where}.value`), 'utf8');
    headers['content-type'] ??= 'application/json';
  }

  if (headers['traceparent'] === undefined) {
    reading.field = `${where}: the traceContext option`;
    const context = trace();
    if (context !== undefined && isTraceparent(context.traceparent)) {
      headers['traceparent'] = context.traceparent;
      // A tracestate that is not valid W3C text is dropped, never allowed to fail the publish.
      if (typeof context.tracestate === 'string' && TRACESTATE.test(context.tracestate)) headers['tracestate'] = context.tracestate;
    }
  }

  reading.field = `${where}.key`;
  let key: Buffer | null = null;
  if (m.key !== null && m.key !== undefined) {
    if (typeof m.key === 'string') {
      const at = loneSurrogateAt(m.key);
      if (at >= 0) throw new InvalidConfigError(`${where}.key has a lone UTF-16 surrogate at index ${at}, which UTF-8 cannot encode (keys of different strings would collide); fix the string or pass bytes.`);
      key = bytes(m.key);
    } else if (m.key instanceof Uint8Array) key = bytes(m.key);
    else throw new InvalidConfigError(`${where}.key must be a string, a Buffer/Uint8Array or null, got ${show(m.key)}; convert it, e.g. String(id).`);
    if (key.length > MAX_KEY_BYTES) {
      throw new InvalidConfigError(`${where}.key is ${key.length} bytes; keys of at most ${MAX_KEY_BYTES} bytes are supported (they are indexed to keep per-key order). Use a shorter key, e.g. a hash of it.`);
    }
  }
  return { eventId, topic, key, value, headers };
}
