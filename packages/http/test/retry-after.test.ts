import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createEffectsTable, send, sleep, spawnServer, type ChildServer } from './helpers';

describe('Retry-After on 409', () => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  const servers: ChildServer[] = [];
  const start = async (env: Record<string, string> = {}): Promise<ChildServer> => {
    const s = await spawnServer({ DATABASE_URL: databaseUrl, SCHEMA: ts.schema, ...env });
    servers.push(s);
    return s;
  };

  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, 'http_retry_after');
    await createEffectsTable(ts.db, ts.schema);
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.kill()));
    await ts?.drop();
  });

  /** Whole seconds left on the key's lease, rounded up, by Postgres's clock. */
  const leaseLeft = async (key: string): Promise<number> =>
    (await sql<{ s: number }>`SELECT ceil(extract(epoch FROM locked_until - now()))::int AS s FROM ${sql.id(ts.schema, 'idempotency_keys')} WHERE key = ${key}`.execute(ts.db)).rows[0]?.s ?? -1;

  it('is 1 while the first request runs, and the seconds left on the lease (rounded up) once its server was killed', async () => {
    const key = randomUUID();
    const body = { amount: 1, currency: 'EUR' };
    const blocking = await start({ BLOCK: '1', LEASE_MS: '20000' });
    const healthy = await start({ LEASE_MS: '20000' });
    const doomed = send(blocking.url, '/charges', { key, body }).catch((err: unknown) => err);
    await blocking.next('handling');

    const early = await send(healthy.url, '/charges', { key, body });
    expect([early.status, early.headers['retry-after']]).toEqual([409, '1']);

    await blocking.kill('SIGKILL');
    await doomed;
    // Postgres notices the dead connection and ends its session (and the holder's lock) soon after.
    for (let i = 0; i < 100; i++) {
      const held = await sql<{ n: string }>`SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = hashtext(${'public'} || chr(10) || ${key})::oid`.execute(ts.db);
      if (Number(held.rows[0]?.n) === 0) break;
      await sleep(100);
    }
    const before = await leaseLeft(key);
    const retry = await send(healthy.url, '/charges', { key, body });
    const after = await leaseLeft(key);
    expect(retry.status).toBe(409);
    expect(retry.headers['content-type']).toBe('application/problem+json');
    const seconds = Number(retry.headers['retry-after']);
    expect(after).toBeGreaterThan(5); // a 20 s lease taken seconds ago
    expect(seconds).toBeGreaterThanOrEqual(after);
    expect(seconds).toBeLessThanOrEqual(before);
  });
});
