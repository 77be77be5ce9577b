import { createHash } from 'node:crypto';

/**
 * Serialises a JSON value with object keys sorted (recursively) and no whitespace, so two
 * bodies that differ only in key order or formatting give the same text. Values that JSON
 * cannot represent (`undefined`, functions) are dropped from objects, as `JSON.stringify` does.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
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

/** Canonical form of a request body: parsed JSON when the body is (or parses as) JSON, the raw bytes otherwise. */
function canonicalBody(body: unknown): { kind: string; bytes: Buffer } {
  if (body === undefined) return { kind: 'empty', bytes: Buffer.alloc(0) };
  if (Buffer.isBuffer(body) || typeof body === 'string') {
    const buf = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
    if (buf.length === 0) return { kind: 'empty', bytes: buf };
    try {
      return { kind: 'json', bytes: Buffer.from(canonicalJson(JSON.parse(buf.toString('utf8'))), 'utf8') };
    } catch {
      return { kind: 'raw', bytes: buf };
    }
  }
  return { kind: 'json', bytes: Buffer.from(canonicalJson(body), 'utf8') };
}

/**
 * The request fingerprint a key is bound to: SHA-256 (hex) over the upper-cased method, the
 * route and the canonical body. Reordered JSON keys and whitespace give the same fingerprint.
 */
export function requestFingerprint(method: string, route: string, body: unknown): string {
  const { kind, bytes } = canonicalBody(body);
  return createHash('sha256')
    .update(`${method.toUpperCase()}\n${route}\n${kind}\n`)
    .update(bytes)
    .digest('hex');
}
