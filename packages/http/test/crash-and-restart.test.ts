import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { countEffects, send, sleep, serverProcesses, stableHeaders } from './helpers';

describe('idempotency keys across server processes', () => {
  const { schema, start } = serverProcesses('http_proc');

  it('replays the identical response after the server restarts', async () => {
    const key = randomUUID();
    const body = { amount: 4200, currency: 'EUR', customer: 'c-1' };
    const first = await start();
    const original = await send(first.url, '/charges', { key, body });
    expect(original.status).toBe(201);
    expect(original.headers['location']).toMatch(/^\/charges\//);
    await first.kill();

    const second = await start();
    const replay = await send(second.url, '/charges', { key, body: { customer: 'c-1', currency: 'EUR', amount: 4200 } });
    expect(replay.status).toBe(original.status);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(stableHeaders(replay)).toEqual(stableHeaders(original));
    expect(replay.body.equals(original.body)).toBe(true);
    expect(await countEffects(schema().db, schema().schema, key)).toBe(1);
  });

  it('lets a retry take over the key of a server killed mid-request once the lease has run out, exactly once', async () => {
    const key = randomUUID();
    const body = { amount: 1, currency: 'EUR' };
    const blocking = await start({ BLOCK: '1', LEASE_MS: '2000' });
    const healthy = await start({ LEASE_MS: '2000' });

    const doomed = send(blocking.url, '/charges', { key, body }).catch((err: unknown) => err);
    await blocking.next('handling');
    // The first request holds the key: a retry elsewhere is told to come back later.
    const early = await send(healthy.url, '/charges', { key, body });
    expect(early.status).toBe(409);
    expect(early.headers['retry-after']).toBeDefined();

    await blocking.kill('SIGKILL');
    expect(await doomed).toMatchObject({ message: expect.stringContaining('fetch failed') }); // the connection died with the server
    // The killed server's transaction is rolled back; its lease has not run out yet.
    const lease = await sql<{ live: boolean }>`SELECT locked_until > now() AS live FROM ${sql.id(schema().schema, 'idempotency_keys')} WHERE key = ${key}`.execute(schema().db);
    const beforeExpiry = await send(healthy.url, '/charges', { key, body });
    if (lease.rows[0]?.live === true) expect(beforeExpiry.status).toBe(409);
    expect(await countEffects(schema().db, schema().schema, key)).toBe(0);

    let retry = beforeExpiry;
    for (let i = 0; retry.status === 409 && i < 100; i++) {
      await sleep(200);
      retry = await send(healthy.url, '/charges', { key, body });
    }
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(JSON.parse(retry.text)).toMatchObject({ attempt: 2 });
    expect(await countEffects(schema().db, schema().schema, key)).toBe(1);

    const again = await send(healthy.url, '/charges', { key, body });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.equals(retry.body)).toBe(true);
    expect(await countEffects(schema().db, schema().schema, key)).toBe(1);
  });
});
