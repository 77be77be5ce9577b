import { Transform, type Readable } from 'node:stream';
import { InvalidConfigError } from '@effectively/core';

/** A request that may carry the body bytes as received, in `rawBody` (set by {@link keepRawBody} / {@link keepRawBodyFastify}). */
export interface RawBodyCarrier {
  rawBody?: Buffer | string | undefined;
}

/**
 * Express: pass as body-parser's `verify` option so the fingerprint is taken over the bytes as
 * received (parsing rounds numbers: `1234567890123456789` and `1234567890123456800` parse to the
 * same double): `express.json({ verify: keepRawBody })`. Stores them in `req.rawBody`.
 */
export function keepRawBody(req: object, _res: unknown, buf: Buffer): void {
  (req as RawBodyCarrier).rawBody = buf;
}

/**
 * Fastify: a `preParsing` hook that keeps the body bytes as they stream to the parser (body
 * limits still apply) in `request.rawBody`: `app.addHook('preParsing', keepRawBodyFastify)`, or
 * per route `{ preParsing: keepRawBodyFastify }`.
 */
export async function keepRawBodyFastify(request: object, _reply: unknown, payload: Readable): Promise<Readable> {
  const chunks: Buffer[] = [];
  const recorder = new Transform({
    transform(chunk: Buffer, _encoding, done): void {
      chunks.push(chunk);
      done(null, chunk);
    },
    flush(done): void {
      (request as RawBodyCarrier).rawBody = Buffer.concat(chunks);
      done();
    },
  });
  payload.on('error', (err) => recorder.destroy(err));
  return Promise.resolve(payload.pipe(recorder));
}

/** Whether the request announces a body (RFC 9112 §6.3: Transfer-Encoding, or a non-zero Content-Length). */
function announcesBody(headers: Record<string, string | string[] | undefined>): boolean {
  if (headers['transfer-encoding'] !== undefined) return true;
  const length = headers['content-length'];
  return length !== undefined && !/^0*$/.test(String(length).trim());
}

/** The body bytes to fingerprint, or why there are none. */
export type BodyBytes = { ok: true; body: Buffer | undefined } | { ok: false; unread: true };

/**
 * The body as received, for the fingerprint: `rawBody` (kept by {@link keepRawBody}), else a body
 * a raw or text parser left as bytes or a string. A body that no parser read (its content type
 * is not one the route parses) is `unread` (answered 415). A body parsed without its bytes
 * being kept is a server configuration error: the fingerprint cannot be exact.
 *
 * @throws InvalidConfigError when the body was parsed but its raw bytes were not kept.
 */
export function bodyBytes(headers: Record<string, string | string[] | undefined>, rawBody: unknown, parsed: unknown, howToKeep: string): BodyBytes {
  if (!announcesBody(headers)) return { ok: true, body: undefined };
  if (Buffer.isBuffer(rawBody)) return { ok: true, body: rawBody };
  if (typeof rawBody === 'string') return { ok: true, body: Buffer.from(rawBody, 'utf8') };
  if (Buffer.isBuffer(parsed)) return { ok: true, body: parsed };
  if (typeof parsed === 'string') return { ok: true, body: Buffer.from(parsed, 'utf8') };
  const untouched = parsed === undefined || (typeof parsed === 'object' && parsed !== null && Object.getPrototypeOf(parsed) === Object.prototype && Object.keys(parsed).length === 0);
  if (untouched) return { ok: false, unread: true };
  throw new InvalidConfigError(
    `The request body was parsed but its raw bytes were not kept, so the idempotency fingerprint cannot compare it exactly (parsing rounds large numbers); ${howToKeep}.`,
  );
}

/** Header lines as received, so a repeated header stays repeated (Node joins them with ", " in `headers`). */
export interface DistinctHeaders {
  headers: Record<string, string | string[] | undefined>;
  /** Node ≥ 18.3: every header's values, one per line received. */
  headersDistinct?: Record<string, string[] | undefined> | undefined;
  /** Names and values as received, alternating. */
  rawHeaders?: string[] | undefined;
}

/** Every `Idempotency-Key` line of the request (one entry per header line), or `undefined` without one. */
export function idempotencyKeyLines(req: DistinctHeaders): string | string[] | undefined {
  const distinct = req.headersDistinct?.['idempotency-key'];
  if (distinct !== undefined) return distinct;
  if (req.rawHeaders !== undefined) {
    const lines: string[] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      if ((req.rawHeaders[i] as string).toLowerCase() === 'idempotency-key') lines.push(req.rawHeaders[i + 1] as string);
    }
    return lines.length === 0 ? undefined : lines;
  }
  return req.headers['idempotency-key'];
}
