import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createOutbox } from '@effectively/core';
import { createTestSchema, createTopics, freePort, readTopic, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';

const bin = path.join(__dirname, '..', 'src', 'bin.ts');

interface Probe {
  status: number;
  body: { status?: string; relayId?: string; lanes?: number };
}

async function probe(port: number, route: string): Promise<Probe | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${route}`);
    return { status: res.status, body: (await res.json()) as Probe['body'] };
  } catch {
    return undefined; // not listening yet
  }
}

async function until<R>(read: () => Promise<R>, ok: (r: R) => boolean, timeoutMs: number, what: string): Promise<R> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; last: ${JSON.stringify(value)?.slice(0, 400)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * `/healthz` (= `/readyz`) means "this relay can deliver now". A relay pointed at a broker
 * address where nothing answers must say 503 and must not lease lanes, so a healthy relay beside
 * it delivers everything; `/livez` still answers 200 (its loop runs).
 */
describe('relay worker health: a relay that cannot reach Kafka', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  const workers: ChildProcess[] = [];
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'cli_health');
  });
  afterAll(async () => {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await s.drop();
  });

  const startWorker = (port: number, brokerList: string): ChildProcess => {
    const worker = spawn(process.execPath, ['--import', 'tsx', bin, 'relay', '--schema', s.schema, '--brokers', brokerList, '--http-port', String(port), '--http-host', '127.0.0.1', '--lease-ms', '2000'], {
      env: { ...process.env, DATABASE_URL: databaseUrl, LOG_LEVEL: 'silent' },
      stdio: 'ignore',
    });
    workers.push(worker);
    return worker;
  };

  it('--brokers 127.0.0.1:1 beside a good relay: the bad one answers 503 and leases no lanes; the good one delivers all 200 rows promptly', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'cli_health', partitions: 4 }])) as [string];
    const [badPort, goodPort] = [await freePort(), await freePort()];
    startWorker(badPort, '127.0.0.1:1');
    const bad = await until(() => probe(badPort, '/livez'), (p) => p?.status === 200, 60_000, 'bad relay live');
    const badId = bad?.body.relayId as string;
    expect(badId).toEqual(expect.any(String));

    // Watch the bad relay for the rest of the test: never ready, never an owner of a lane.
    let watching = true;
    const seen = { ready: 0, probes: 0, lanesHeld: 0 };
    const watcher = (async () => {
      while (watching) {
        const [h, r] = await Promise.all([probe(badPort, '/healthz'), probe(badPort, '/readyz')]);
        seen.probes++;
        if (h?.status !== 503 || r?.status !== 503) seen.ready++;
        const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(s.schema, 'outbox_lanes')} WHERE owner = ${badId}`.execute(s.db);
        seen.lanesHeld = Math.max(seen.lanesHeld, Number(rows[0]?.n));
        await new Promise((res) => setTimeout(res, 100));
      }
    })();

    await new Promise((r) => setTimeout(r, 3_000)); // the bad relay runs alone for a while
    startWorker(goodPort, brokers.join(','));
    await until(() => probe(goodPort, '/healthz'), (p) => p?.status === 200, 60_000, 'good relay ready');

    const outbox = createOutbox({ schema: s.schema });
    const written = Date.now();
    for (let i = 0; i < 20; i++) {
      await s.db.transaction().execute((trx) => outbox.publish(trx, Array.from({ length: 10 }, (_, j) => ({ topic, key: `k${(i * 10 + j) % 50}`, value: { i, j } }))));
    }
    await until(() => readTopic(kafka, topic), (m) => m.length >= 200, 15_000, 'all 200 rows delivered');
    const deliveredMs = Date.now() - written;
    await new Promise((r) => setTimeout(r, 1_000));
    watching = false;
    await watcher;

    expect(seen.probes).toBeGreaterThan(10);
    expect(seen.ready).toBe(0);
    expect(seen.lanesHeld).toBe(0);
    const good = await probe(goodPort, '/healthz');
    expect(good).toMatchObject({ status: 200, body: { status: 'ok', lanes: 64 } });
    expect((await probe(badPort, '/livez'))?.status).toBe(200);
    process.stdout.write(`relay-health: 200 rows delivered in ${deliveredMs} ms beside a relay with --brokers 127.0.0.1:1\n`);
  });
});
