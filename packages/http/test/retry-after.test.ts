import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { send, sleep, serverProcesses } from './helpers';

describe('Retry-After on 409', () => {
  const { schema, start } = serverProcesses('http_retry_after');

  /** Whole seconds left on the key's lease, rounded up, by Postgres's clock. */
  const leaseLeft = async (key: string): Promise<number> =>
    (await sql<{ s: number }>`SELECT ceil(extract(epoch FROM locked_until - now()))::int AS s FROM ${sql.id(schema().schema, 'idempotency_keys')} WHERE key = ${key}`.execute(schema().db)).rows[0]?.s ?? -1;

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
      const held = await sql<{ n: string }>`SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = hashtext(${'public'} || chr(10) || ${key})::oid`.execute(schema().db);
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
