import type { HandleOptions, HandlerContext, Idempotency } from './idempotency';
import type { HandlerResponse, HttpResponse } from './types';

/** The parts of an Express request the adapter reads (so this package does not depend on Express's types). */
export interface ExpressLikeRequest {
  method: string;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed by `express.json()` (or `express.raw()` for a Buffer); `undefined` without a body parser. */
  body?: unknown;
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
 * app.post('/payments', express.json(), idempotentExpress(idempotency, { scope: (req) => req.get('x-account-id') ?? 'public' },
 *   async (req, { db }) => ({ status: 201, json: await createPayment(db, req.body) })));
 * ```
 *
 * A handler error is passed to `next(err)` after the key is released.
 */
export function idempotentExpress<DB, Req extends ExpressLikeRequest = ExpressLikeRequest>(
  idempotency: Idempotency<DB>,
  options: ExpressIdempotencyOptions<Req>,
  handler: (req: Req, context: HandlerContext<DB>) => Promise<HandlerResponse>,
): (req: Req, res: ExpressLikeResponse, next: (err?: unknown) => void) => void {
  const { scope, route = expressRoute, ...handleOptions } = options;
  return (req, res, next) => {
    (async () => {
      const result = await idempotency.handle(
        { method: req.method, route: route(req), path: req.originalUrl ?? req.path, scope: await scope(req), idempotencyKey: req.headers['idempotency-key'], body: req.body },
        (context) => handler(req, context),
        handleOptions,
      );
      sendExpress(res, result.response);
    })().catch(next);
  };
}
