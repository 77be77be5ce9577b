import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, type Idempotency } from '../src';
import { startApp, type AdapterName, type RunningApp, type TestHandler } from './adapters';
import { countEffects, createEffectsTable, send, sleep, stableHeaders } from './helpers';

describe.each<AdapterName>(['express', 'fastify'])('idempotency keys over %s', (adapter) => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  let idempotency: Idempotency;
  let app: RunningApp;
  let runs = 0;
  const handler: TestHandler = async (body, { db, key }) => {
    runs++;
    await sql`INSERT INTO ${sql.id(ts.schema, 'effects')} (key, note) VALUES (${key ?? ''}, ${JSON.stringify(body)})`.execute(db);
    await sleep(300); // keep the key in progress while the others arrive
    return { status: 201, headers: { location: `/items/${randomUUID()}` }, json: { id: randomUUID(), received: body as Record<string, string> } };
  };

  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, `http_${adapter}`, { max: 20 });
    await createEffectsTable(ts.db, ts.schema);
    idempotency = createIdempotency({ db: ts.db, schema: ts.schema });
    app = await startApp(adapter, idempotency, handler);
  });
  afterAll(async () => {
    await app?.close();
    await ts?.drop();
  });

  it('runs the handler exactly once for fifty concurrent requests with one key', async () => {
    const key = randomUUID();
    const before = runs;
    const responses = await Promise.all(Array.from({ length: 50 }, () => send(app.url, '/items', { key, body: { amount: 100, currency: 'EUR' } })));
    expect(runs - before).toBe(1);
    expect(await countEffects(ts.db, ts.schema, key)).toBe(1);
    const statuses = new Set(responses.map((r) => r.status));
    expect([...statuses].every((s) => s === 201 || s === 409)).toBe(true);
    const originals = responses.filter((r) => r.status === 201 && r.headers['idempotent-replayed'] === undefined);
    expect(originals).toHaveLength(1);
    for (const r of responses.filter((x) => x.status === 201)) expect(r.body.equals(originals[0]!.body)).toBe(true);
    for (const r of responses.filter((x) => x.status === 409)) {
      expect(r.headers['retry-after']).toBe('1');
      expect(r.headers['content-type']).toBe('application/problem+json');
      expect(JSON.parse(r.text)).toMatchObject({ status: 409, title: expect.any(String), type: expect.stringContaining('idempotency-key-in-use') });
    }
    // Once it completed, every retry is a replay of the original.
    const replay = await send(app.url, '/items', { key, body: { amount: 100, currency: 'EUR' } });
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(originals[0]!.body)).toBe(true);
    expect(stableHeaders(replay)).toEqual(stableHeaders(originals[0]!));
    expect(runs - before).toBe(1);
  });

  it('treats reordered JSON keys and whitespace as the same request, and a different body as a mismatch (422)', async () => {
    const key = randomUUID();
    const first = await send(app.url, '/items', { key, body: '{"amount":100,"currency":"EUR","meta":{"a":1,"b":[1,2]}}' });
    expect(first.status).toBe(201);
    const reordered = await send(app.url, '/items', { key, body: '{ "meta": { "b": [1, 2], "a": 1 },\n  "currency": "EUR", "amount": 100 }' });
    expect(reordered.status).toBe(201);
    expect(reordered.headers['idempotent-replayed']).toBe('true');
    expect(reordered.body.equals(first.body)).toBe(true);

    const different = await send(app.url, '/items', { key, body: { amount: 999, currency: 'EUR', meta: { a: 1, b: [1, 2] } } });
    expect(different.status).toBe(422);
    expect(different.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(different.text)).toMatchObject({ status: 422, type: expect.stringContaining('idempotency-key-reused') });
    const otherRoute = await send(app.url, '/items/7', { key, body: '{"amount":100,"currency":"EUR","meta":{"a":1,"b":[1,2]}}' });
    expect(otherRoute.status).toBe(422);
    const k2 = randomUUID();
    expect((await send(app.url, '/items/7', { key: k2, body: { n: 1 } })).status).toBe(201);
    expect((await send(app.url, '/items/8', { key: k2, body: { n: 1 } })).status).toBe(422);
    expect(await countEffects(ts.db, ts.schema, key)).toBe(1);
  });

  it('keeps keys of different scopes apart', async () => {
    const key = randomUUID();
    const a = await send(app.url, '/items', { key, body: { n: 1 }, headers: { 'x-account': 'alice' } });
    const b = await send(app.url, '/items', { key, body: { n: 2 }, headers: { 'x-account': 'bob' } });
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(b.headers['idempotent-replayed']).toBeUndefined();
    expect(await countEffects(ts.db, ts.schema, key)).toBe(2);
  });

  it('answers 400 with a problem document for a missing, too long or malformed key', async () => {
    const before = runs;
    const missing = await send(app.url, '/items', { body: { n: 1 } });
    expect(missing.status).toBe(400);
    expect(JSON.parse(missing.text)).toMatchObject({ status: 400, type: expect.stringContaining('idempotency-key-missing') });
    const tooLong = await send(app.url, '/items', { key: 'k'.repeat(256), body: { n: 1 } });
    expect(tooLong.status).toBe(400);
    expect(JSON.parse(tooLong.text)).toMatchObject({ type: expect.stringContaining('idempotency-key-invalid'), detail: expect.stringContaining('255') });
    const spaces = await send(app.url, '/items', { key: 'has spaces', body: { n: 1 } });
    expect(spaces.status).toBe(400);
    expect(runs).toBe(before);
    const maxLength = await send(app.url, '/items', { key: 'k'.repeat(255), body: { n: 1 } });
    expect(maxLength.status).toBe(201);
    const quoted = await send(app.url, '/items', { key: `"${'k'.repeat(255)}"`, body: { n: 1 } });
    expect(quoted.headers['idempotent-replayed']).toBe('true');
  });
});
