import type { HandleOptions, HandlerContext, Idempotency } from './idempotency';
import { problemResponse } from './problem';
import { bodyBytes, idempotencyKeyLines, type DistinctHeaders } from './raw-request';
import type { HandlerResponse, HttpResponse } from './types';

/** The parts of a Fastify request the adapter reads (so this package does not depend on Fastify's types). */
export interface FastifyLikeRequest {
  method: string;
  headers: Record<string, string | string[] | undefined>;
  body?: unknown;
  /** The body bytes as received, kept by the `keepRawBodyFastify` preParsing hook; what the fingerprint is taken over. */
  rawBody?: Buffer | string;
  /** The Node request (`headersDistinct`/`rawHeaders`), so a repeated `Idempotency-Key` is seen. */
  raw?: Partial<DistinctHeaders>;
  /** The request target as received (path and query); what the key is bound to. */
  url: string;
  /** Fastify's route options; `url` is the route template (`/payments/:id`). */
  routeOptions?: { url?: string | undefined };
}

/** The parts of a Fastify reply the adapter writes. */
export interface FastifyLikeReply {
  code(status: number): unknown;
  header(name: string, value: string): unknown;
  send(payload: Buffer): unknown;
}

/** Options of {@link idempotentFastify}. */
export interface FastifyIdempotencyOptions<Req> extends HandleOptions {
  /** Whose key space the request's key lives in: the authenticated tenant, user or API client. */
  scope: (request: Req) => string | Promise<string>;
  /** The route name used in metrics and logs; default the route template. */
  route?: (request: Req) => string;
}

/** Writes an {@link HttpResponse} to a Fastify reply. */
export function sendFastify<Reply extends FastifyLikeReply>(reply: Reply, response: HttpResponse): Reply {
  reply.code(response.status);
  for (const [name, value] of Object.entries(response.headers)) reply.header(name, value);
  reply.send(response.body);
  return reply;
}

function fastifyRoute(request: FastifyLikeRequest): string {
  return request.routeOptions?.url ?? request.url.split('?')[0] ?? '/';
}

/**
 * Wraps `handler` as a Fastify route handler that honours `Idempotency-Key`:
 *
 * ```ts
 * app.addHook('preParsing', keepRawBodyFastify);
 * app.post('/payments', idempotentFastify(idempotency, { scope: (req) => String(req.headers['x-account-id'] ?? 'public') },
 *   async (req, { db }) => ({ status: 201, json: await createPayment(db, req.body) })));
 * ```
 *
 * The key is bound to the body bytes as received: keep them with the `keepRawBodyFastify`
 * preParsing hook (app-wide or on the route); a body parsed without them is a configuration
 * error (500). A handler error is re-thrown (after the key is released) for Fastify's error handler.
 */
export function idempotentFastify<DB, Req extends FastifyLikeRequest = FastifyLikeRequest, Reply extends FastifyLikeReply = FastifyLikeReply>(
  idempotency: Idempotency<DB>,
  options: FastifyIdempotencyOptions<Req>,
  handler: (request: Req, context: HandlerContext<DB>) => Promise<HandlerResponse>,
): (request: Req, reply: Reply) => Promise<Reply> {
  const { scope, route = fastifyRoute, ...handleOptions } = options;
  return async (request, reply) => {
    const body = bodyBytes(request.headers, request.rawBody, request.body, "add the preParsing hook: app.addHook('preParsing', keepRawBodyFastify) from @effectively/http");
    if (!body.ok) {
      return sendFastify(reply, problemResponse('request-body-unread', idempotency.options.problemTypeBase, 'The request body was not read; send it with a content type this route accepts (e.g. application/json).'));
    }
    const idempotencyKey = idempotencyKeyLines({ headers: request.headers, headersDistinct: request.raw?.headersDistinct, rawHeaders: request.raw?.rawHeaders });
    const result = await idempotency.handle(
      { method: request.method, route: route(request), path: request.url, scope: await scope(request), idempotencyKey, body: body.body },
      (context) => handler(request, context),
      handleOptions,
    );
    return sendFastify(reply, result.response);
  };
}
