import { createOutbox } from '@effectively/core';
import { createTestSchema, createTopics, readTopic, startLocalBroker, testKafka, testServices, type LocalKafkaBroker, type TestSchema } from '@effectively/testkit';
import { createRelay, type OutboxRelay } from '../src';
import { firstOccurrences, header, jsonValue, orderViolations, outboxCounts, outboxEventIds, sleep, waitFor } from './support/lanes';

/** The most failed cycles that fit in `ms` when the k-th consecutive failure is followed by a pause of at least min(10 s, base·2^(k-1)) / 2. */
function maxFailuresWithBackoff(ms: number, base: number): number {
  let failures = 1;
  for (let waited = 0; ; failures++) {
    waited += Math.min(10_000, base * 2 ** (failures - 1)) / 2;
    if (waited > ms) return failures;
  }
}

/**
 * The relay's own broker goes down while writers keep committing: cycles fail, nothing is
 * counted against the rows or deleted without Kafka's acknowledgement, and once the broker is
 * back everything drains, each key in order. A private broker: halting the shared one would
 * break every other test file.
 */
describe('Kafka broker outage under the relay', () => {
  const { databaseUrl } = testServices();
  let broker: LocalKafkaBroker | undefined;
  let s: TestSchema | undefined;
  let relay: OutboxRelay | undefined;

  beforeAll(async () => {
    [broker, s] = await Promise.all([startLocalBroker({ heap: '512m' }), createTestSchema(databaseUrl, 'relay_outage')]);
  });
  afterAll(async () => {
    await relay?.stop();
    await broker?.stop();
    await s?.drop();
  });

  it('while the broker is down, cycles fail and back off (writer notifications do not cut the backoff short), rows stay in the outbox; after restart() all of them arrive, in order per key', async () => {
    if (broker === undefined || s === undefined) throw new Error('setup failed');
    const { db, schema } = s;
    const b = broker;
    const kafka = testKafka([...b.brokers]);
    const [topic] = (await createTopics(kafka, [{ prefix: 'relay_outage', partitions: 3 }])) as [string];

    // Every event id Kafka acknowledged (the hook runs after the ack, before the delete).
    const acked = new Set<string>();
    relay = createRelay({
      brokers: [...b.brokers],
      db,
      databaseUrl,
      schema,
      pollIntervalMs: 50,
      batchSize: 100,
      leaseMs: 2_000,
      // Short kafkajs retries so a cycle against a dead broker fails in about a second.
      producer: { retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 } },
      kafka: { retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 }, connectionTimeout: 1000, requestTimeout: 5000 },
      hooks: { afterKafkaAck: ({ eventIds }) => eventIds.forEach((id) => acked.add(id)) },
    });
    const r = relay;
    await r.start();

    /** Every row committed: event id → key, seq (commit order within the key), when written. */
    const written = new Map<string, { key: string; seq: number; at: number }>();
    /** Rows the outbox lost without an acknowledgement: written, no longer in the outbox, never acked. */
    const deletedUnacked = async (): Promise<string[]> => {
      const snapshot = [...written.keys()];
      const remaining = await outboxEventIds(db, schema);
      return snapshot.filter((id) => !remaining.has(id) && !acked.has(id));
    };

    // Writers: 8 keys, each written by one loop in sequence, so seq per key is its commit order.
    const outbox = createOutbox({ schema });
    let writing = true;
    const writer = async (keys: string[]): Promise<void> => {
      const seq = new Map(keys.map((k) => [k, 0]));
      for (let i = 0; writing; i++) {
        const key = keys[i % keys.length] as string;
        const n = seq.get(key) as number;
        seq.set(key, n + 1);
        const at = Date.now();
        const { eventIds } = await db.transaction().execute((trx) => outbox.publish(trx, { topic, key, value: { key, seq: n } }));
        written.set(eventIds[0] as string, { key, seq: n, at });
        await sleep(10);
      }
    };
    const writers = Promise.all([0, 1, 2, 3].map((w) => writer([`key-${w}`, `key-${w + 4}`])));

    try {
      await waitFor(() => r.stats.published, (n) => n >= 50, 30_000, 'rows published before the outage');

      const errorsAtHalt = r.stats.cycleErrors;
      const haltStarted = Date.now();
      await b.halt();
      const haltedAt = Date.now();
      await waitFor(() => r.stats.cycleErrors, (n) => n >= errorsAtHalt + 2, 30_000, 'relay cycles failing');
      await sleep(4_000);
      // The failed cycles back off (exponentially, from 100 ms here) even though writers keep
      // notifying: at most the failures that fit in the time elapsed with each pause at its
      // shortest (half its ceiling), plus slack. A slow machine only fails fewer cycles.
      const elapsed = Date.now() - haltStarted;
      const failures = r.stats.cycleErrors - errorsAtHalt;
      expect(failures).toBeLessThanOrEqual(maxFailuresWithBackoff(elapsed, 100) + 2);
      // Rows written after the halt stay in the outbox (a broker still draining its open connections
      // while it shuts down may have acknowledged a few: those were deleted, and only those);
      // nothing unacknowledged was deleted.
      // Rows known to be committed before the outbox is read: a writer may commit (and record)
      // another row while the read runs, which the read cannot see.
      const committedBefore = [...written];
      const remaining = await outboxEventIds(db, schema);
      const sinceHalt = committedBefore.filter(([, w]) => w.at > haltedAt).map(([id]) => id);
      expect(sinceHalt.length).toBeGreaterThan(50);
      expect(sinceHalt.filter((id) => remaining.has(id)).length).toBeGreaterThan(sinceHalt.length - 5);
      expect(sinceHalt.filter((id) => !remaining.has(id) && !acked.has(id))).toEqual([]);
      expect(await deletedUnacked()).toEqual([]);
      expect(r.stats.failedAttempts).toBe(0);
      expect(r.stats.parked).toBe(0);
      const { pending, parked } = await outboxCounts(db, schema);
      expect(parked).toBe(0);
      expect(pending).toBeGreaterThanOrEqual(sinceHalt.length);
      const errorsDuringOutage = r.stats.cycleErrors - errorsAtHalt;
      // Failing for longer than a lease: /healthz would answer 503, naming the error.
      const health = await waitFor(() => r.health(), (h) => h.status === 'failing', 10_000, 'reported failing');
      expect(health.lastError).toMatch(/Kafka/);

      await b.restart();
      const publishedAtRestart = r.stats.published;
      await waitFor(() => r.stats.published, (n) => n > publishedAtRestart, 60_000, 'publishing again after the restart');
      await sleep(500);
      writing = false;
      await writers;
      await waitFor(() => outboxCounts(db, schema), (c) => c.total === 0, 60_000, 'outbox drained');
      expect(await deletedUnacked()).toEqual([]);
      expect(r.stats.failedAttempts).toBe(0);
      expect(r.stats.parked).toBe(0);
      await waitFor(() => r.health().status, (st) => st === 'ok', 10_000, 'healthy again');
      // Informational: how hard the relay retried while the broker was down.
      process.stdout.write(`broker-outage: ${errorsDuringOutage} failed cycles during the outage, ${written.size} rows written, stats ${JSON.stringify(r.stats)}\n`);
    } finally {
      writing = false;
      await writers.catch(() => undefined);
    }

    const messages = await readTopic(kafka, topic);
    const firsts = firstOccurrences(messages);
    expect(new Set(messages.map((m) => header(m, 'event-id')))).toEqual(new Set(written.keys()));
    expect(firsts).toHaveLength(written.size);
    const received = firsts.map((m) => ({ kafkaKey: m.key?.toString(), ...jsonValue<{ key: string; seq: number }>(m) }));
    expect(received.filter((m) => m.kafkaKey !== m.key)).toEqual([]);
    expect(orderViolations(received, (m) => m.key, (m) => m.seq)).toEqual([]);
    // Per key, seq 0..n-1 without a gap.
    const perKey = new Map<string, number[]>();
    for (const m of received) perKey.set(m.key, [...(perKey.get(m.key) ?? []), m.seq]);
    expect(perKey.size).toBe(8);
    for (const [, seqs] of perKey) expect(seqs).toEqual(seqs.map((_, i) => i));

    await r.stop();
  });
});
