import { createHash } from 'node:crypto';
import { InvalidConfigError } from '@effectively/core';
import { canonicalJsonText, canonicalNumber } from './canonical-json';

/**
 * Serialises a JSON value with object keys sorted (recursively) and no whitespace, so two
 * bodies that differ only in key order or formatting give the same text. `undefined` members and
 * functions are dropped from objects, as `JSON.stringify` does; a BigInt is written as its exact
 * decimal value; `undefined` array items are `null`; NaN, ±Infinity, Maps and Sets are written so
 * that they equal neither `null` nor `{}` (which `JSON.stringify` would make of them). For a body parsed from JSON text, fingerprint
 * the raw text instead ({@link fingerprintRequest} with a Buffer): parsing rounds numbers.
 */
export function canonicalJson(value: unknown): string {
  if (typeof value === 'bigint') return canonicalNumber(value.toString());
  // Never equated with null (JSON.stringify's choice): NaN and ±Infinity keep their own names.
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  // An undefined item (or a hole) is null, as JSON.stringify writes it (what an absent value means in JSON).
  if (Array.isArray(value)) return `[${Array.from(value, (v: unknown) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  // Contents JSON.stringify would lose ({}): kept, in insertion order, under a name JSON text cannot hold.
  if (value instanceof Map) return `Map[${[...value].map(([k, v]) => `${canonicalJson(k)}:${canonicalJson(v)}`).join(',')}]`;
  if (value instanceof Set) return `Set[${[...value].map((v) => canonicalJson(v)).join(',')}]`;
  const toJson = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJson === 'function') return canonicalJson((toJson as () => unknown).call(value));
  const entries = Object.keys(value)
    .sort()
    .flatMap((k) => {
      const v = (value as Record<string, unknown>)[k];
      return v === undefined || typeof v === 'function' ? [] : [`${JSON.stringify(k)}:${canonicalJson(v)}`];
    });
  return `{${entries.join(',')}}`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

type CanonicalBody = { ok: true; kind: string; bytes: Buffer } | { ok: false; path: string };

/**
 * Canonical form of a request body. Raw bytes (Buffer or string) that are one JSON value are
 * canonicalised from the text itself (exact numbers, see `canonical-json.ts`); other bytes
 * (not UTF-8, not JSON) are compared byte for byte; a leading UTF-8 byte order
 * mark before a JSON value is ignored; an already parsed value
 * is serialised with {@link canonicalJson}. No body and an empty body are the same; `{}` differs.
 */
function canonicalBody(body: unknown): CanonicalBody {
  if (body === undefined) return { ok: true, kind: 'empty', bytes: Buffer.alloc(0) };
  if (Buffer.isBuffer(body) || body instanceof Uint8Array || typeof body === 'string') {
    const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    if (buf.length === 0) return { ok: true, kind: 'empty', bytes: buf };
    let text: string;
    try {
      text = utf8.decode(buf);
    } catch {
      return { ok: true, kind: 'raw', bytes: buf };
    }
    // A leading byte order mark is not part of the JSON text (RFC 8259 §8.1: parsers may ignore
    // it, and Express's and Fastify's do): the same data with or without it is the same body.
    const canonical = canonicalJsonText(text.startsWith('\uFEFF') ? text.slice(1) : text);
    if (canonical.ok) return { ok: true, kind: 'json', bytes: Buffer.from(canonical.text, 'utf8') };
    if (canonical.reason === 'duplicate-member') return { ok: false, path: canonical.path };
    return { ok: true, kind: 'raw', bytes: buf };
  }
  return { ok: true, kind: 'json', bytes: Buffer.from(canonicalJson(body), 'utf8') };
}

/** The outcome of {@link fingerprintRequest}: the fingerprint, or why the body cannot have one. */
export type FingerprintResult = { ok: true; fingerprint: string } | { ok: false; problem: 'duplicate-member'; path: string; detail: string };

/**
 * The request fingerprint a key is bound to: SHA-256 (hex) over the upper-cased method, the
 * request target and the canonical body. Reordered JSON members, whitespace, string escapes and
 * the notation of a number (`1`, `1.0`, `1e0`) give the same fingerprint; a different value
 * (however many digits it has) a different one. A JSON body that repeats a member in one object
 * has none (`duplicate-member`; answered 400).
 *
 * @param body the raw body bytes as received (Buffer or string) — what the adapters pass — or an
 *   already parsed value (whose numbers are then compared as JavaScript numbers), or `undefined`.
 */
export function fingerprintRequest(method: string, route: string, body: unknown): FingerprintResult {
  const canonical = canonicalBody(body);
  if (!canonical.ok) {
    return { ok: false, problem: 'duplicate-member', path: canonical.path, detail: `The JSON body repeats the member ${JSON.stringify(canonical.path)} (JSON Pointer); send each member once.` };
  }
  const fingerprint = createHash('sha256')
    .update(`${method.toUpperCase()}\n${route}\n${canonical.kind}\n`)
    .update(canonical.bytes)
    .digest('hex');
  return { ok: true, fingerprint };
}

/**
 * {@link fingerprintRequest} as a string, for low-level `claim` callers.
 *
 * @throws InvalidConfigError when a JSON body repeats a member (no fingerprint can stand for it).
 */
export function requestFingerprint(method: string, route: string, body: unknown): string {
  const result = fingerprintRequest(method, route, body);
  if (!result.ok) throw new InvalidConfigError(result.detail);
  return result.fingerprint;
}
