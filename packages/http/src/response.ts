import { validateHeaderName, validateHeaderValue } from 'node:http';
import type { HandlerResponse, HttpResponse, StoredResponse } from './types';

/** Refuses a header Node could not send: it must not be stored, or every replay of it would fail too. */
function checkHeader(name: string, value: string): void {
  try {
    validateHeaderName(name);
    validateHeaderValue(name, value);
  } catch (error) {
    throw new TypeError(`A handler returned the header ${JSON.stringify(name)}: ${error instanceof Error ? error.message : String(error)}; return a valid HTTP header name and value (no CR, LF or NUL).`);
  }
}

/** A handler's response split into what is stored (and replayed) and what is sent once. */
export interface NormalizedResponse {
  stored: StoredResponse;
  /** Headers outside the `storedHeaders` list: sent with the first response only. */
  once: Record<string, string>;
}

/**
 * Turns a handler's {@link HandlerResponse} into exact bytes and lower-case headers, with a
 * content type filled in, so the first response and every replay are the same bytes.
 */
export function normalizeResponse(response: HandlerResponse, storedHeaders: ReadonlySet<string>): NormalizedResponse {
  const { status } = response;
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new TypeError(`A handler returned status ${JSON.stringify(status)}; return a final HTTP status from 200 to 599.`);
  }
  if (response.json !== undefined && response.body !== undefined) {
    throw new TypeError('A handler returned both json and body; return one of them.');
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(response.headers ?? {})) {
    checkHeader(name, String(value));
    headers[name.toLowerCase()] = String(value);
  }
  let body: Buffer;
  if (response.json !== undefined) {
    body = Buffer.from(JSON.stringify(response.json), 'utf8');
    headers['content-type'] ??= 'application/json; charset=utf-8';
  } else if (typeof response.body === 'string') {
    body = Buffer.from(response.body, 'utf8');
    headers['content-type'] ??= 'text/plain; charset=utf-8';
  } else if (response.body !== undefined) {
    body = Buffer.from(response.body);
    headers['content-type'] ??= 'application/octet-stream';
  } else {
    body = Buffer.alloc(0);
  }
  const kept: Record<string, string> = {};
  const once: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) (storedHeaders.has(name) ? kept : once)[name] = value;
  return { stored: { status, headers: kept, body }, once };
}

/** The first response: what was stored plus the headers sent only once. */
export function firstResponse(n: NormalizedResponse): HttpResponse {
  return { status: n.stored.status, headers: { ...n.stored.headers, ...n.once }, body: n.stored.body };
}

/** A replay of a stored response, marked with the replay header. */
export function replayResponse(stored: StoredResponse, replayHeader: string): HttpResponse {
  return { status: stored.status, headers: { ...stored.headers, [replayHeader]: 'true' }, body: stored.body };
}
