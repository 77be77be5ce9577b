import crypto, { createHash } from 'node:crypto';
import type { ConsumedEvent, ResolvedOptions } from './config';
import { coordinatesOf, readEventId, type IdOrigin, type RefusedIdValue } from './event-id';
import type { RawMessage } from './kafka-adapter';
import { readRedriveId } from './redrive';

/** Why a message goes straight to the dead-letter topic without reaching the handler. */
export type RejectReason = 'invalid-event-id' | 'tombstone' | 'malformed-payload';

/**
 * A message sorted before the transaction: an event for the handler, or a rejected one.
 * `id` and `origin` are what `processed_events` records; `key` joins them for in-memory maps.
 */
export type Classified<T> =
  | { kind: 'event'; message: RawMessage; id: string; origin: IdOrigin; key: string; hash: string; event: ConsumedEvent<T>; redriveId?: string }
  | { kind: 'rejected'; message: RawMessage; id: string; origin: IdOrigin; key: string; hash: string; reason: RejectReason; error: string; refusedId?: RefusedIdValue };

/** One string per (origin, id): a producer id and a derived key never map to the same entry. */
export function idKey(origin: IdOrigin, id: string): string {
  return `${origin}\u0000${id}`;
}

/** sha256 of the payload (tombstones hash to a fixed marker): what "same payload" means. */
export function payloadHash(value: Buffer | null): string {
  // crypto.hash (Node >= 20.12): one call, no Hash object per message; the same SHA-256 hex.
  if (oneShot !== undefined) return oneShot('sha256', value ?? TOMBSTONE, 'hex');
  return createHash('sha256')
    .update(value ?? TOMBSTONE)
    .digest('hex');
}

const TOMBSTONE = Buffer.from('\u0000tombstone', 'utf8');
const oneShot = (crypto as { hash?: (algorithm: string, data: Buffer, encoding: 'hex') => string }).hash;

/**
 * Reads the id and decodes the payload of each message. Messages without a usable id get a
 * record keyed by their coordinates (`invalid:topic/partition/offset`, origin `derived`: no
 * producer id can equal it), so their dead-lettering is itself idempotent across redeliveries;
 * they are never given a random id.
 */
export function classify<T>(message: RawMessage, options: ResolvedOptions<T>): Classified<T> {
  const hash = payloadHash(message.value);
  const idResult = readEventId(message, options.eventId, options.maxEventIdBytes);
  if (!idResult.ok) {
    const id = `invalid:${coordinatesOf(message)}`;
    const rejected: Classified<T> = { kind: 'rejected', message, id, origin: 'derived', key: idKey('derived', id), hash, reason: 'invalid-event-id', error: `${idResult.reason}: ${idResult.detail}` };
    return idResult.refused === undefined ? rejected : { ...rejected, refusedId: idResult.refused };
  }
  const { id, origin } = idResult;
  const key = idKey(origin, id);
  let value: T;
  if (message.value === null) {
    if (options.tombstones === 'dead-letter') return { kind: 'rejected', message, id, origin, key, hash, reason: 'tombstone', error: 'tombstone (null value) and tombstones are dead-lettered' };
    value = null as T;
  } else {
    try {
      value = options.decode(message.value, message);
    } catch (error) {
      return { kind: 'rejected', message, id, origin, key, hash, reason: 'malformed-payload', error: `payload could not be decoded: ${error instanceof Error ? error.message : String(error)}` };
    }
  }
  const redriveId = readRedriveId(message);
  const classified: Classified<T> = {
    kind: 'event',
    message,
    id,
    origin,
    key,
    hash,
    event: { id, topic: message.topic, partition: message.partition, offset: message.offset, key: message.key, value, headers: message.headers, timestamp: message.timestamp },
  };
  return redriveId === undefined ? classified : { ...classified, redriveId };
}
