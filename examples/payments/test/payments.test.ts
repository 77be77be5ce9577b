import type { Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { sql } from 'kysely';
import { silentLogger } from '@effectively/core';
import { createIdempotency } from '@effectively/http';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createPaymentsApp } from '../src/app';
import { prepareSchema } from '../src/schema';

describe('payments example', () => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  let server: Server;
  let url: string;
  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, 'example_payments', { migrate: false });
    await prepareSchema(ts.db, ts.schema);
    const app = createPaymentsApp({ idempotency: createIdempotency({ db: ts.db, schema: ts.schema }), schema: ts.schema, registry: new Registry(), logger: silentLogger() });
    server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    const address = server.address();
    url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
    await ts?.drop();
  });

  const pay = (key: string, body: string): Promise<Response> =>
    fetch(`${url}/payments`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': key }, body });

  it('charges once for the README\'s two curl commands', async () => {
    const key = randomUUID();
    const first = await pay(key, '{"amount": 1999, "currency": "EUR", "customer": "cus_42"}');
    const second = await pay(key, '{"customer": "cus_42", "amount": 1999, "currency": "EUR"}');
    expect(first.status).toBe(201);
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(await second.text()).toBe(await first.text());
    const count = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(ts.schema, 'payments')}`.execute(ts.db);
    expect(Number(count.rows[0]?.n)).toBe(1);
    const events = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(ts.schema, 'outbox')}`.execute(ts.db);
    expect(Number(events.rows[0]?.n)).toBe(1);
  });

  it('refuses invalid input before claiming the key, so the corrected request can use it', async () => {
    const key = randomUUID();
    const bad = await pay(key, '{"amount": -5, "currency": "EUR", "customer": "cus_42"}');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ detail: expect.stringContaining('amount') });
    expect((await pay(key, '{"amount": 5, "currency": "EUR", "customer": "cus_42"}')).status).toBe(201);
  });
});
