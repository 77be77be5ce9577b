import { randomUUID } from 'node:crypto';
import express from 'express';
import Fastify from 'fastify';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, idempotentExpress, idempotentFastify, keepRawBody, type Idempotency } from '../src';
import { listen, send } from './helpers';

/** The adapters fingerprint the body bytes as received; without them they refuse loudly instead of guessing. */
describe('the adapters need the raw body', () => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  let idempotency: Idempotency;
  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, 'http_raw', { max: 4 });
    idempotency = createIdempotency({ db: ts.db, schema: ts.schema });
  });
  afterAll(async () => ts?.drop());

  it('Express: a body parsed without keepRawBody is a configuration error (500 naming the fix); a body no parser read is 415', async () => {
    const errors: unknown[] = [];
    const app = express();
    const route = idempotentExpress(idempotency, { scope: () => 'public' }, async () => ({ status: 201, json: { ok: true } }));
    app.post('/parsed', express.json(), route);
    app.post('/kept', express.json({ verify: keepRawBody }), route);
    app.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      errors.push(err);
      res.status(500).end();
    });
    const server = await listen((port, host, ready) => app.listen(port, host, ready));
    try {
      expect((await send(server.url, '/parsed', { key: randomUUID(), body: { n: 1 } })).status).toBe(500);
      expect(String(errors[0])).toMatch(/InvalidConfigError.*express\.json\(\{ verify: keepRawBody \}\)/);
      const res = await fetch(`${server.url}/kept`, { method: 'POST', headers: { 'idempotency-key': randomUUID(), 'content-type': 'text/plain' }, body: 'n=1' });
      const unread = { status: res.status, text: await res.text() };
      expect(unread.status).toBe(415);
      expect(JSON.parse(unread.text)).toMatchObject({ status: 415, type: expect.stringContaining('request-body-unread') });
      expect((await send(server.url, '/kept', { key: randomUUID(), body: { n: 1 } })).status).toBe(201);
    } finally {
      await server.close();
    }
  });

  it('Fastify: without the keepRawBodyFastify hook a JSON body is a configuration error (500)', async () => {
    const app = Fastify();
    app.post('/items', idempotentFastify(idempotency, { scope: () => 'public' }, async () => ({ status: 201, json: { ok: true } })));
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const r = await send(url, '/items', { key: randomUUID(), body: { n: 1 } });
      expect(r.status).toBe(500);
      expect(r.text).toMatch(/keepRawBodyFastify/);
    } finally {
      await app.close();
    }
  });
});
