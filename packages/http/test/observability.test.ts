import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import { sql } from 'kysely';
import { PrometheusMetrics } from '@effectively/core';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, IDEMPOTENCY_METRICS, requestFingerprint, type IdempotentRequest } from '../src';

describe('metrics and logs (framework-neutral core)', () => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, 'http_obs');
  });
  afterAll(() => ts?.drop());

  it('counts claims, replays, conflicts, mismatches and takeovers, and logs the key and scope', async () => {
    const registry = new Registry();
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    const idempotency = createIdempotency({
      db: ts.db,
      schema: ts.schema,
      leaseMs: 200,
      metrics: new PrometheusMetrics(registry, IDEMPOTENCY_METRICS),
      logger: pino({ level: 'debug' }, sink),
    });
    const key = randomUUID();
    const request = (body: unknown): IdempotentRequest => ({ method: 'POST', route: '/things', scope: 'tenant-7', idempotencyKey: key, body });

    // A claim whose holder "crashed": claimed through the low-level API and never completed.
    const first = await idempotency.claim({ scope: 'tenant-7', key, method: 'POST', route: '/things', fingerprint: requestFingerprint('POST', '/things', { n: 1 }) });
    expect(first.kind).toBe('claimed');
    expect((await idempotency.handle(request({ n: 1 }), async () => ({ status: 201, json: {} }))).outcome).toBe('conflict');
    expect((await idempotency.handle(request({ n: 2 }), async () => ({ status: 201, json: {} }))).outcome).toBe('mismatch');
    await sql`UPDATE ${sql.id(ts.schema, 'idempotency_keys')} SET locked_until = now() - interval '1 second' WHERE key = ${key}`.execute(ts.db);
    const takeover = await idempotency.handle(request({ n: 1 }), async () => ({ status: 201, json: { ok: 1 } }));
    expect(takeover).toMatchObject({ outcome: 'executed', stored: true, takeover: true });
    expect((await idempotency.handle(request({ n: 1 }), async () => ({ status: 201, json: {} }))).outcome).toBe('replayed');

    const value = async (name: string): Promise<number> => (await registry.getSingleMetric(`effectively_${name}`)?.get())?.values.reduce((s, v) => s + v.value, 0) ?? 0;
    expect(await value('idempotency_claims_total')).toBe(1);
    expect(await value('idempotency_takeovers_total')).toBe(1);
    expect(await value('idempotency_conflicts_total')).toBe(1);
    expect(await value('idempotency_mismatches_total')).toBe(1);
    expect(await value('idempotency_replays_total')).toBe(1);
    const takeoverLog = lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('took over'));
    expect(takeoverLog).toMatchObject({ idempotencyKey: key, scope: 'tenant-7', route: '/things', attempt: 2 });
  });

  it('counts the keys whose handler is running (idempotency_keys_in_flight), back to 0 when they finish or fail', async () => {
    const registry = new Registry();
    const idempotency = createIdempotency({ db: ts.db, schema: ts.schema, metrics: new PrometheusMetrics(registry, IDEMPOTENCY_METRICS) });
    const inFlight = async (): Promise<number | undefined> => (await registry.getSingleMetric('effectively_idempotency_keys_in_flight')?.get())?.values.find((v) => v.labels.route === '/slow')?.value;
    const request = (): IdempotentRequest => ({ method: 'POST', route: '/slow', scope: 'tenant-8', idempotencyKey: randomUUID(), body: {} });
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const seen: Array<number | undefined> = [];
    const running = [1, 2].map(() =>
      idempotency.handle(request(), async () => {
        await gate;
        return { status: 201, json: {} };
      }),
    );
    const failing = idempotency.handle(request(), async () => {
      seen.push(await inFlight());
      throw new Error('boom');
    });
    await expect(failing).rejects.toThrow('boom');
    for (let i = 0; i < 200 && (await inFlight()) !== 2; i++) await new Promise((r) => setTimeout(r, 10));
    seen.push(await inFlight());
    release();
    await Promise.all(running);
    expect(seen[0]).toBeGreaterThanOrEqual(1);
    expect(seen[1]).toBe(2);
    expect(await inFlight()).toBe(0);
  });
});
