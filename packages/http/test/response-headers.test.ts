import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, type Idempotency } from '../src';
import { startApp, type AdapterName, type RunningApp, type TestHandler } from './adapters';
import { countEffects, countRows, createEffectsTable, send } from './helpers';

/** A response header Node cannot send must never be stored: every replay of it would fail as well. */
describe.each<AdapterName>(['express', 'fastify'])('a handler answering with a header that cannot be sent, over %s', (adapter) => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  let idempotency: Idempotency;
  let app: RunningApp;
  let runs = 0;
  const handler: TestHandler = async (body, { db, key }) => {
    runs++;
    await sql`INSERT INTO ${sql.id(ts.schema, 'effects')} (key, note) VALUES (${key ?? ''}, 'x')`.execute(db);
    const location = (body as { location: string }).location;
    return { status: 201, headers: { location }, json: { ok: true } };
  };

  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, `http_hdr_${adapter}`, { max: 6 });
    await createEffectsTable(ts.db, ts.schema);
    idempotency = createIdempotency({ db: ts.db, schema: ts.schema });
    app = await startApp(adapter, idempotency, handler);
  });
  afterAll(async () => {
    await app?.close();
    await ts?.drop();
  });

  it.each([
    ['a line feed', '/items/1\nSet-Cookie: x=1'],
    ['NUL', '/items/1\u0000'],
  ])('with %s: 500, writes rolled back, key released; the retry runs again', async (_name, location) => {
    const key = randomUUID();
    const before = runs;
    const first = await send(app.url, '/items', { key, body: { location } });
    expect(first.status).toBe(500);
    expect(await countEffects(ts.db, ts.schema, key)).toBe(0);
    expect(await countRows(ts.db, ts.schema, 'idempotency_keys')).toBe(0);
    const retry = await send(app.url, '/items', { key, body: { location } });
    expect(retry.status).toBe(500);
    expect(runs - before).toBe(2);
  });
});
