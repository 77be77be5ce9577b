import type { HandleOptions, HandlerContext, Idempotency } from './idempotency';
import { problemResponse } from './problem';
import { bodyBytes, idempotencyKeyLines } from './raw-request';
import type { HandlerResponse, HttpResponse } from './types';

/** The parts of an Express request the adapter reads (so this package does not depend on Express's types). */
export interface ExpressLikeRequest {
  method: string;
  headers: Record<string, string | string[] | undefined>;
  /** Every header's values, one per line received (Node ≥ 18.3), so a repeated `Idempotency-Key` is seen. */
  headersDistinct?: Record<string, string[] | undefined>;
  /** Header names and values as received, alternating (used when `headersDistinct` is absent). */
  rawHeaders?: string[];
  /** Parsed by `express.json()` (or `express.raw()` for a Buffer); `undefined` without a body parser. */
  body?: unknown;
  /** The body bytes as received, kept by `express.json({ verify: keepRawBody })`; what the fingerprint is taken over. */
  rawBody?: Buffer | string;
  baseUrl?: string;
  path?: string;
  /** The request target as received (path and query); what the key is bound to. */
  originalUrl?: string;
  /** Express's matched route; its `path` is the template (`/payments/:id`). */
  route?: { path?: unknown } | undefined;
}

/** The parts of an Express response the adapter writes. */
export interface ExpressLikeResponse {
  status(code: number): unknown;
  setHeader(name: string, value: string): unknown;
  end(body: Buffer): unknown;
}

/** Options of {@link idempotentExpress}. */
export interface ExpressIdempotencyOptions<Req> extends HandleOptions {
  /** Whose key space the request's key lives in: the authenticated tenant, user or API client. */
  scope: (req: Req) => string | Promise<string>;
  /** The route name used in metrics and logs; default `req.baseUrl + req.route.path`. */
  route?: (req: Req) => string;
}

/** Writes an {@link HttpResponse} to an Express (or plain Node) response. */
export function sendExpress(res: ExpressLikeResponse, response: HttpResponse): void {
  res.status(response.status);
  for (const [name, value] of Object.entries(response.headers)) res.setHeader(name, value);
  res.setHeader('content-length', String(response.body.length));
  res.end(response.body);
}

function expressRoute(req: ExpressLikeRequest): string {
  const template = req.route?.path;
  if (typeof template === 'string') return (req.baseUrl ?? '') + template;
  return (req.baseUrl ?? '') + (req.path ?? '/');
}

/**
 * Wraps `handler` as an Express route handler that honours `Idempotency-Key`:
 *
 * ```ts
 * app.post('/payments', express.json({ verify: keepRawBody }), idempotentExpress(idempotency, { scope: (req) => req.get('x-account-id') ?? 'public' },
 *   async (req, { db }) => ({ status: 201, json: await createPayment(db, req.body) })));
 * ```
 *
 * The key is bound to the body bytes as received: keep them with `verify: keepRawBody` (or parse
 * with `express.raw()`/`express.text()`). A body no parser read answers 415; a body parsed without
 * its bytes kept is a configuration error passed to `next` (500). A handler error is passed to
 * `next(err)` after the key is released.
 */
export function idempotentExpress<DB, Req extends ExpressLikeRequest = ExpressLikeRequest>(
  idempotency: Idempotency<DB>,
  options: ExpressIdempotencyOptions<Req>,
  handler: (req: Req, context: HandlerContext<DB>) => Promise<HandlerResponse>,
): (req: Req, res: ExpressLikeResponse, next: (err?: unknown) => void) => void {
  const { scope, route = expressRoute, ...handleOptions } = options;
  return (req, res, next) => {
    (async () => {
      const body = bodyBytes(req.headers, req.rawBody, req.body, 'mount the body parser with express.json({ verify: keepRawBody }) from @effectively/http');
      if (!body.ok) {
        sendExpress(res, problemResponse('request-body-unread', idempotency.options.problemTypeBase, 'The request body was not read; send it with a content type this route accepts (e.g. application/json).'));
        return;
      }
      const result = await idempotency.handle(
        { method: req.method, route: route(req), path: req.originalUrl ?? req.path, scope: await scope(req), idempotencyKey: idempotencyKeyLines(req), body: body.body },
        (context) => handler(req, context),
        handleOptions,
      );
      sendExpress(res, result.response);
    })().catch(next);
  };
}
