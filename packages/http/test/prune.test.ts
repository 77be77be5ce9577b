import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, type Idempotency } from '../src';
import { startApp, type RunningApp } from './adapters';
import { countEffects, countRows, createEffectsTable, send } from './helpers';

describe('expiry and prune', () => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  let idempotency: Idempotency;
  let app: RunningApp;
  let runs = 0;

  /** Moves keys' expiry into the past, as if a day had gone by. */
  const expire = (keys: string[]): Promise<unknown> =>
    sql`UPDATE ${sql.id(ts.schema, 'idempotency_keys')} SET expires_at = now() - interval '1 second' WHERE key IN (${sql.join(keys)})`.execute(ts.db);

  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, 'http_prune');
    await createEffectsTable(ts.db, ts.schema);
    idempotency = createIdempotency({ db: ts.db, schema: ts.schema, ttlMs: 60_000 });
    app = await startApp('express', idempotency, async (_body, { db, key }) => {
      runs++;
      await sql`INSERT INTO ${sql.id(ts.schema, 'effects')} (key) VALUES (${key ?? ''})`.execute(db);
      return { status: 201, json: { run: runs } };
    });
  });
  afterAll(async () => {
    await app?.close();
    await ts?.drop();
  });

  it('prunes expired keys in batches and leaves live ones; a pruned key can be used again', async () => {
    const expired = Array.from({ length: 25 }, () => randomUUID());
    const live = randomUUID();
    for (const key of [...expired, live]) expect((await send(app.url, '/items', { key, body: { key } })).status).toBe(201);
    await expire(expired);

    expect(await idempotency.prune({ batchSize: 10 })).toBe(25);
    expect(await countRows(ts.db, ts.schema, 'idempotency_keys')).toBe(1);
    expect(await idempotency.prune({ batchSize: 10 })).toBe(0);

    const reused = await send(app.url, '/items', { key: expired[0], body: { another: 'request' } });
    expect(reused.status).toBe(201);
    expect(reused.headers['idempotent-replayed']).toBeUndefined();
    expect(await countEffects(ts.db, ts.schema, expired[0])).toBe(2);
    expect((await send(app.url, '/items', { key: live, body: { key: live } })).headers['idempotent-replayed']).toBe('true');
  });

  it('stops after maxBatches', async () => {
    const keys = Array.from({ length: 5 }, () => randomUUID());
    for (const key of keys) await send(app.url, '/items', { key, body: {} });
    await expire(keys);
    expect(await idempotency.prune({ batchSize: 2, maxBatches: 2 })).toBe(4);
    expect(await idempotency.prune({ batchSize: 2 })).toBe(1);
  });

  it('treats an expired key that was not pruned yet as new', async () => {
    const key = randomUUID();
    await send(app.url, '/items', { key, body: { v: 1 } });
    await expire([key]);
    const again = await send(app.url, '/items', { key, body: { v: 2 } });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(await countEffects(ts.db, ts.schema, key)).toBe(2);
    const row = await sql<{ attempts: number; fresh: boolean }>`
      SELECT attempts, expires_at > now() + interval '50 seconds' AS fresh FROM ${sql.id(ts.schema, 'idempotency_keys')} WHERE key = ${key}`.execute(ts.db);
    expect(row.rows[0]).toEqual({ attempts: 1, fresh: true });
  });
});
