/** A JSON value, as a handler may return it for the response body (object members that are `undefined` are left out, as by `JSON.stringify`). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue | undefined };

/** The framework-neutral view of an incoming request that {@link Idempotency.handle} needs. */
export interface IdempotentRequest {
  /** HTTP method, e.g. `POST` (compared upper-cased). */
  method: string;
  /** The route template (`/payments/:id`), used as the metrics label and in logs. */
  route: string;
  /** The concrete request target (`/payments/42?expand=customer`) the key is bound to; part of the fingerprint. Default `route`. */
  path?: string | undefined;
  /** Whose key space the key lives in (tenant, user, API client); supplied by the application, never by the client's key. */
  scope: string;
  /** The raw `Idempotency-Key` header value(s), exactly as received; `undefined` when absent. */
  idempotencyKey: string | readonly string[] | undefined;
  /** The request body: parsed JSON (objects, arrays, …), a string or a Buffer of raw bytes, or `undefined`. */
  body: unknown;
}

/** What a handler returns. Give either `json` (serialised for you) or `body` (sent as is). */
export interface HandlerResponse {
  /** HTTP status code (100–599). */
  status: number;
  /** Response headers. Those in the `storedHeaders` option are stored and replayed; others are sent on the first response only. */
  headers?: Record<string, string>;
  /** A JSON body; sets `content-type: application/json; charset=utf-8` unless given. */
  json?: JsonValue;
  /** A raw body; a string is UTF-8 encoded (`text/plain; charset=utf-8` unless given), a Buffer `application/octet-stream` unless given. */
  body?: Buffer | string;
}

/** A response ready to write to the socket: status, lower-case header names, exact body bytes. */
export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** The response kept in the key record and replayed byte for byte. */
export interface StoredResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}
