import { randomUUID } from 'node:crypto';
import { CompiledQuery, sql } from 'kysely';
import { createOutbox, TransactionControlRefusedError } from '@effectively/core';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, type HandlerContext, type HandlerResponse, type IdempotencyOptions } from '../src';
import { startApp, type RunningApp, type TestHandler } from './adapters';
import { countEffects, countRows, createEffectsTable, send, sleep } from './helpers';

describe('transactional mode and what gets stored', () => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  const apps: RunningApp[] = [];
  /** Per-key behaviour, so one server serves every case. */
  let behaviour: (body: unknown, context: HandlerContext<unknown>) => Promise<HandlerResponse>;
  const handler: TestHandler = (body, context) => behaviour(body, context);

  const keyRow = async (key: string): Promise<{ status: string; response_status: number | null } | undefined> =>
    (await sql<{ status: string; response_status: number | null }>`SELECT status, response_status FROM ${sql.id(ts.schema, 'idempotency_keys')} WHERE key = ${key}`.execute(ts.db)).rows[0];
  const effect = (db: HandlerContext<unknown>['db'], key: string | undefined): Promise<unknown> =>
    sql`INSERT INTO ${sql.id(ts.schema, 'effects')} (key) VALUES (${key ?? ''})`.execute(db);

  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, 'http_trx');
    await createEffectsTable(ts.db, ts.schema);
  });
  afterAll(async () => {
    for (const a of apps) await a.close();
    await ts?.drop();
  });
  const start = async (options: Omit<IdempotencyOptions, 'db' | 'schema'>, adapter: 'express' | 'fastify' = 'express'): Promise<RunningApp> => {
    const app = await startApp(adapter, createIdempotency({ ...options, db: ts.db, schema: ts.schema }), handler);
    apps.push(app);
    return app;
  };

  it('rolls back business rows, outbox rows and the stored response when the handler throws; the retry succeeds', async () => {
    const app = await start({}, 'fastify');
    const outbox = createOutbox({ schema: ts.schema });
    const key = randomUUID();
    let attempts = 0;
    behaviour = async (body, { db, key: k }) => {
      attempts++;
      await effect(db, k);
      await outbox.publish(db, [{ eventId: `${k}:payment-created`, topic: 'payments', value: { body: body as Record<string, string> } }]);
      if (attempts === 1) throw new Error('payment provider exploded after the writes');
      return { status: 201, json: { ok: true } };
    };
    const failed = await send(app.url, '/items', { key, body: { amount: 5 } });
    expect(failed.status).toBe(500);
    expect(await countEffects(ts.db, ts.schema, key)).toBe(0);
    expect(await countRows(ts.db, ts.schema, 'outbox')).toBe(0);
    expect(await keyRow(key)).toBeUndefined();

    const retry = await send(app.url, '/items', { key, body: { amount: 5 } });
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(await countEffects(ts.db, ts.schema, key)).toBe(1);
    expect(await countRows(ts.db, ts.schema, 'outbox')).toBe(1);
    expect(await keyRow(key)).toEqual({ status: 'completed', response_status: 201 });
  });

  it('does not store a 5xx answer (writes rolled back, key released) but stores and replays a 4xx', async () => {
    const app = await start({});
    const key5 = randomUUID();
    let calls = 0;
    behaviour = async (_body, { db, key }) => {
      calls++;
      await effect(db, key);
      return key === key5 && calls === 1 ? { status: 503, json: { error: 'try later' } } : { status: key === key5 ? 201 : 402, json: { calls } };
    };
    const unavailable = await send(app.url, '/items', { key: key5, body: {} });
    expect(unavailable.status).toBe(503);
    expect(await keyRow(key5)).toBeUndefined();
    expect(await countEffects(ts.db, ts.schema, key5)).toBe(0);
    const ok = await send(app.url, '/items', { key: key5, body: {} });
    expect(ok.status).toBe(201);
    expect(await countEffects(ts.db, ts.schema, key5)).toBe(1);

    const key4 = randomUUID();
    const declined = await send(app.url, '/items', { key: key4, body: {} });
    expect(declined.status).toBe(402);
    const replayed = await send(app.url, '/items', { key: key4, body: {} });
    expect(replayed.status).toBe(402);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(replayed.body.equals(declined.body)).toBe(true);
    expect(await countEffects(ts.db, ts.schema, key4)).toBe(1);
  });

  it('honours storeClientErrors: false and storeServerErrors: true', async () => {
    const app = await start({ storeClientErrors: false, storeServerErrors: true });
    behaviour = async (body, { db, key }) => {
      await effect(db, key);
      return { status: (body as { status: number }).status, json: {} };
    };
    const k4 = randomUUID();
    expect((await send(app.url, '/items', { key: k4, body: { status: 409 } })).status).toBe(409);
    expect(await keyRow(k4)).toBeUndefined();
    const k5 = randomUUID();
    expect((await send(app.url, '/items', { key: k5, body: { status: 500 } })).status).toBe(500);
    const again = await send(app.url, '/items', { key: k5, body: { status: 500 } });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(await countEffects(ts.db, ts.schema, k5)).toBe(1);
  });

  it('runs handlers outside a transaction when transactional is false, storing the response afterwards', async () => {
    const app = await start({ transactional: false });
    const key = randomUUID();
    let sawTransaction: boolean | undefined;
    behaviour = async (_body, { db, key: k, transactional }) => {
      sawTransaction = transactional;
      await effect(db, k);
      return { status: 200, body: 'plain text', headers: { 'x-request-id': randomUUID() } };
    };
    const first = await send(app.url, '/items', { key, body: { a: 1 } });
    expect(first.status).toBe(200);
    expect(sawTransaction).toBe(false);
    expect(first.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(first.headers['x-request-id']).toBeDefined();
    const replay = await send(app.url, '/items', { key, body: { a: 1 } });
    expect(replay.text).toBe('plain text');
    expect(replay.headers['x-request-id']).toBeUndefined(); // not in storedHeaders: sent once
    expect(await countEffects(ts.db, ts.schema, key)).toBe(1);
  });

  it('renews the lease of a slow handler outside a transaction, so a retry does not take it over', async () => {
    const app = await start({ transactional: false, leaseMs: 300, heartbeatMs: 100 });
    const key = randomUUID();
    behaviour = async (_body, { db, key: k }) => {
      await effect(db, k);
      await sleep(1_200); // four leases long
      return { status: 201, json: { slow: true } };
    };
    const first = send(app.url, '/items', { key, body: {} });
    await sleep(800);
    const retry = await send(app.url, '/items', { key, body: {} });
    expect(retry.status).toBe(409);
    expect((await first).status).toBe(201);
    expect((await send(app.url, '/items', { key, body: {} })).headers['idempotent-replayed']).toBe('true');
    expect(await countEffects(ts.db, ts.schema, key)).toBe(1);
  });

  it('runs requests without a key unprotected when requireKey is false', async () => {
    const app = await start({ requireKey: false });
    behaviour = async (_body, { db, key }) => {
      expect(key).toBeUndefined();
      await effect(db, 'unprotected');
      return { status: 201, json: {} };
    };
    expect((await send(app.url, '/items', { body: {} })).status).toBe(201);
    expect((await send(app.url, '/items', { body: {} })).status).toBe(201);
    expect(await countEffects(ts.db, ts.schema, 'unprotected')).toBe(2);
  });

  it.each(['express', 'fastify'] as const)('%s: a handler that catches a database error and returns gets no commit: 500, nothing written, key released; the retry runs again', async (adapter) => {
    const app = await start({}, adapter);
    const key = randomUUID();
    let swallow = true;
    behaviour = async (_body, { db, key: k }) => {
      await effect(db, k);
      // The statement fails, the handler catches its error: Postgres has aborted the transaction.
      if (swallow) await sql`SELECT 1 / 0`.execute(db).catch(() => undefined);
      return { status: 201, json: { ok: true } };
    };
    const failed = await send(app.url, '/items', { key, body: { amount: 7 } });
    expect(failed.status).toBe(500);
    expect(await countEffects(ts.db, ts.schema, key)).toBe(0);
    expect(await keyRow(key)).toBeUndefined();

    swallow = false;
    const retry = await send(app.url, '/items', { key, body: { amount: 7 } });
    expect(retry.status).toBe(201);
    expect(await countEffects(ts.db, ts.schema, key)).toBe(1);
    expect(await keyRow(key)).toEqual({ status: 'completed', response_status: 201 });
  });

  it('a request without a key (requireKey false) whose handler catches a database error and returns: 500, not a 201 for writes that were rolled back', async () => {
    const app = await start({ requireKey: false });
    behaviour = async (_body, { db }) => {
      await effect(db, 'unprotected-swallowed');
      await sql`SELECT 1 / 0`.execute(db).catch(() => undefined);
      return { status: 201, json: {} };
    };
    expect((await send(app.url, '/items', { body: {} })).status).toBe(500);
    expect(await countEffects(ts.db, ts.schema, 'unprotected-swallowed')).toBe(0);
  });

  it.each([
    ['COMMIT after another statement', 'SELECT 1; COMMIT'],
    ['ROLLBACK', 'ROLLBACK'],
    ['COMMIT added to a query builder with modifyEnd', 'builder'],
  ])('a handler that ends its transaction itself (%s) is refused before the statement is sent: 500, its write undone, nothing stored, the key released', async (_name, text) => {
    const app = await start({});
    const key = randomUUID();
    let attempts = 0;
    let refused: unknown;
    behaviour = async (_body, { db, key: k }) => {
      attempts++;
      await effect(db, k);
      if (attempts === 1) {
        const end = text === 'builder' ? db.selectNoFrom(sql<number>`1`.as('one')).modifyEnd(sql`; COMMIT`).execute() : db.executeQuery(CompiledQuery.raw(text));
        await end.catch((error: unknown) => {
          refused = error;
          throw error;
        });
      }
      return { status: 201, json: {} };
    };
    expect((await send(app.url, '/items', { key, body: {} })).status).toBe(500);
    expect(refused).toBeInstanceOf(TransactionControlRefusedError);
    expect(await countEffects(ts.db, ts.schema, key)).toBe(0);
    expect(await keyRow(key)).toBeUndefined();
    const retry = await send(app.url, '/items', { key, body: {} });
    expect(retry.status).toBe(201);
    expect(await countEffects(ts.db, ts.schema, key)).toBe(1);
  });
});
