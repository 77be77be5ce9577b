import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createOutbox } from '@effectively/core';
import { createTestSchema, createTopics, freePort, readTopic, testClient, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';

const bin = path.join(__dirname, '..', 'src', 'bin.ts');

function cli(args: string[], env: Record<string, string>): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { env: { ...process.env, LOG_LEVEL: 'warn', ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

async function until<R>(read: () => Promise<R>, ok: (r: R) => boolean, timeoutMs = 30_000): Promise<R> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read().catch(() => undefined);
    if (value !== undefined && ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms; last: ${JSON.stringify(value)?.slice(0, 400)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe(`effectively relay (worker process, ${testClient()}) and effectively outbox (operator commands)`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const env = { DATABASE_URL: databaseUrl, KAFKA_BROKERS: brokers.join(',') };
  let s: TestSchema;
  let worker: ChildProcess | undefined;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'cli_relay');
  });
  afterAll(async () => {
    if (worker !== undefined && worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
    await s.drop();
  });

  it('publishes, serves /healthz and /metrics on the configured port, and exits 0 on SIGTERM', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'cli_relay', partitions: 2 }])) as [string];
    const port = await freePort();
    let stderr = '';
    worker = spawn(process.execPath, ['--import', 'tsx', bin, 'relay', '--schema', s.schema, '--client', testClient(), '--http-port', String(port), '--http-host', '127.0.0.1', '--lease-ms', '2000'], {
      env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    worker.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const health = await until(() => get(`http://127.0.0.1:${port}/healthz`), (r) => r.status === 200);
    expect(JSON.parse(health.body)).toMatchObject({ status: 'ok', state: 'running', lanes: 64, listening: true });

    const outbox = createOutbox({ schema: s.schema });
    await s.db.transaction().execute(async (trx) => {
      await outbox.publish(trx, Array.from({ length: 20 }, (_, i) => ({ topic, key: `k${i % 4}`, value: { i } })));
    });
    await until(() => readTopic(kafka, topic), (m) => m.length >= 20);
    const metrics = await until(() => get(`http://127.0.0.1:${port}/metrics`), (r) => /relay_published_total\{[^}]*\} 20\b/.test(r.body));
    expect(metrics.body).toMatch(/relay_lanes_owned\{schema="[^"]+"\} 64/);
    expect(metrics.body).toMatch(/relay_listener_connected\{schema="[^"]+"\} 1/);
    expect(metrics.body).toMatch(/relay_publish_latency_seconds_count\{schema="[^"]+"\} 20/);
    expect(metrics.body).toMatch(/process_cpu_user_seconds_total/);
    expect((await get(`http://127.0.0.1:${port}/nope`)).status).toBe(404);

    const exit = new Promise<number | null>((resolve) => worker?.once('exit', (code) => resolve(code)));
    worker.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(stderr).not.toMatch(/"level":50/);
    // A clean stop hands the lanes back at once.
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(s.schema, 'outbox_lanes')} WHERE owner IS NOT NULL`.execute(s.db);
    expect(Number(rows[0]?.n)).toBe(0);
  });

  it('lists, re-queues and discards parked rows', async () => {
    const outbox = createOutbox({ schema: s.schema });
    const written = await s.db.transaction().execute((trx) =>
      outbox.publish(trx, [
        { topic: 'parked-a', key: 'k1', value: 'one' },
        { topic: 'parked-a', key: 'k1', value: 'two' },
        { topic: 'parked-b', key: 'k2', value: 'three' },
      ]),
    );
    // Park the first row of each key, as the relay does after maxAttempts refusals.
    await sql`UPDATE ${sql.id(s.schema, 'outbox')} SET status = 'parked', attempts = 5, last_error = 'UNKNOWN_TOPIC_OR_PARTITION' WHERE event_id = ANY(${[written.eventIds[0], written.eventIds[2]]}::text[])`.execute(s.db);

    const listed = cli(['outbox', 'parked', '--schema', s.schema], env);
    expect(listed.code).toBe(0);
    const parked = listed.stdout.trim().split('\n').map((line) => JSON.parse(line) as { id: string; eventId: string; key: string; waitingBehind: number; lastError: string });
    expect(parked.map((p) => p.eventId)).toEqual([written.eventIds[0], written.eventIds[2]]);
    expect(parked[0]).toMatchObject({ key: 'k1', waitingBehind: 1, lastError: 'UNKNOWN_TOPIC_OR_PARTITION' });

    expect(cli(['outbox', 'requeue', '--schema', s.schema, '--ids', (parked[0] as { id: string }).id], env).code).toBe(0);
    expect(cli(['outbox', 'discard', '--schema', s.schema, '--all', '--topic', 'parked-b'], env).code).toBe(0);
    const { rows } = await sql<{ event_id: string; status: string; attempts: number }>`SELECT event_id, status, attempts FROM ${sql.id(s.schema, 'outbox')} ORDER BY id`.execute(s.db);
    expect(rows).toEqual([
      { event_id: written.eventIds[0], status: 'pending', attempts: 0 },
      { event_id: written.eventIds[1], status: 'pending', attempts: 0 },
    ]);

    const refused = cli(['outbox', 'requeue', '--schema', s.schema], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/--ids 12,13/);
    expect(cli(['outbox', 'frobnicate', '--schema', s.schema], env).code).toBe(2);
  });
});
