import express from 'express';
import Fastify from 'fastify';
import { idempotentExpress, idempotentFastify, keepRawBody, keepRawBodyFastify, type HandlerResponse, type HandleOptions, type HandlerContext, type Idempotency } from '../src';
import { listen } from './helpers';

/** The handler under test: sees the parsed body and the idempotency context. */
export type TestHandler = (body: unknown, context: HandlerContext<unknown>) => Promise<HandlerResponse>;

/** A running server with the handler mounted at POST /items and POST /items/:id. */
export interface RunningApp {
  url: string;
  close(): Promise<void>;
}

/** Which framework mounts the handler. */
export type AdapterName = 'express' | 'fastify';

const scopeOf = (headers: Record<string, string | string[] | undefined>): string => String(headers['x-account'] ?? 'public');

/** Mounts `handler` with the named adapter on 127.0.0.1:0. */
export async function startApp(adapter: AdapterName, idempotency: Idempotency, handler: TestHandler, options: HandleOptions = {}): Promise<RunningApp> {
  if (adapter === 'express') {
    const app = express();
    const route = idempotentExpress(idempotency, { ...options, scope: (req) => scopeOf(req.headers) }, (req, ctx) => handler(req.body, ctx));
    app.post('/items', express.json({ verify: keepRawBody }), route);
    app.post('/items/:id', express.json({ verify: keepRawBody }), route);
    return listen((port, host, ready) => app.listen(port, host, ready));
  }
  const app = Fastify();
  app.addHook('preParsing', keepRawBodyFastify);
  const route = idempotentFastify(idempotency, { ...options, scope: (req) => scopeOf(req.headers) }, (req, ctx) => handler(req.body, ctx));
  app.post('/items', route);
  app.post('/items/:id', route);
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  return { url: address, close: () => app.close() };
}
