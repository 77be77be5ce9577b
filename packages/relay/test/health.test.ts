import { createTestSchema, createTopics, readTopic, startLocalBroker, testKafka, testServices, type LocalKafkaBroker, type TestSchema } from '@effectively/testkit';
import { createRelay, type OutboxRelay } from '../src';
import { laneRows, outboxCounts, publishCommitted, sleep, waitFor } from './support/lanes';

const LEASE_MS = 3_000;

/**
 * Health means "can deliver now". Two relays on a private broker: when the broker goes away
 * while they are idle, both report failing within `leaseMs` and hand their lanes back; they stay
 * failing for the whole outage (rows written meanwhile wait); after the restart each is healthy
 * again only once Kafka answered it, and everything written during the outage is delivered.
 */
describe('relay health across a broker outage', () => {
  const { databaseUrl } = testServices();
  let broker: LocalKafkaBroker | undefined;
  let s: TestSchema | undefined;
  const relays: OutboxRelay[] = [];

  beforeAll(async () => {
    [broker, s] = await Promise.all([startLocalBroker({ heap: '512m' }), createTestSchema(databaseUrl, 'relay_health')]);
  });
  afterAll(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await broker?.stop();
    await s?.drop();
  });

  it('idle relays turn failing within leaseMs of the outage, hold no lanes and stay failing during it, and turn ok after the restart once Kafka answered; rows written meanwhile arrive', async () => {
    if (broker === undefined || s === undefined) throw new Error('setup failed');
    const { db, schema } = s;
    const b = broker;
    const kafka = testKafka([...b.brokers]);
    const [topic] = (await createTopics(kafka, [{ prefix: 'relay_health', partitions: 3 }])) as [string];
    for (let i = 0; i < 2; i++) {
      const relay = createRelay({ brokers: [...b.brokers], db, databaseUrl, schema, leaseMs: LEASE_MS, pollIntervalMs: 100 });
      relays.push(relay);
      await relay.start();
    }
    const allOk = (): boolean => relays.every((r) => r.health().status === 'ok');
    await waitFor(allOk, (ok) => ok, 30_000, 'both relays healthy');
    await publishCommitted(db, schema, Array.from({ length: 20 }, (_, i) => ({ topic, key: `k${i % 5}`, value: { i } })));
    await waitFor(() => outboxCounts(db, schema), (c) => c.total === 0, 30_000, 'first rows delivered');
    await sleep(LEASE_MS); // idle now

    // Sample the relays' health every 20 ms from the halt on.
    const firstFailing = new Map<OutboxRelay, number>();
    const okDuringOutage: string[] = [];
    let outage = true;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const now = Date.now();
        for (const [i, r] of relays.entries()) {
          const h = r.health();
          if (h.status === 'failing' && !firstFailing.has(r)) firstFailing.set(r, now);
          if (outage && firstFailing.has(r) && h.status === 'ok') okDuringOutage.push(`relay ${i} ok at +${now - (firstFailing.get(r) as number)} ms`);
        }
        await sleep(20);
      }
    })();

    const haltStarted = Date.now();
    await b.halt();
    const haltedAt = Date.now();
    try {
      await waitFor(() => firstFailing.size, (n) => n === relays.length, 30_000, 'both relays failing');
      for (const r of relays) {
        const after = (firstFailing.get(r) as number) - haltedAt;
        process.stdout.write(`health: relay failing ${after} ms after the broker was gone (halt took ${haltedAt - haltStarted} ms)\n`);
        expect(after).toBeLessThanOrEqual(LEASE_MS);
      }
      // Rows written during the outage wait; the relays stay failing and hold no lanes.
      await publishCommitted(db, schema, Array.from({ length: 30 }, (_, i) => ({ topic, key: `k${i % 5}`, value: { i, during: true } })));
      await sleep(3 * LEASE_MS);
      expect(okDuringOutage).toEqual([]);
      expect(relays.map((r) => r.health().status)).toEqual(['failing', 'failing']);
      expect((await laneRows(db, schema)).filter((l) => l.owner !== null && l.leaseUntil > l.now)).toEqual([]);
      expect((await outboxCounts(db, schema)).pending).toBe(30);
    } finally {
      outage = false;
    }

    const restartedAt = Date.now();
    await b.restart();
    await waitFor(allOk, (ok) => ok, 60_000, 'both relays healthy after the restart');
    sampling = false;
    await sampler;
    for (const r of relays) expect(Date.parse(r.health().kafkaAnsweredAt as string)).toBeGreaterThanOrEqual(restartedAt);
    // The first relay back may take all lanes; it hands the surplus over at its next rebalance.
    await waitFor(() => relays.map((r) => r.health().lanes), (l) => l.every((n) => n > 0), 30_000, 'both relays hold lanes again');
    await waitFor(() => outboxCounts(db, schema), (c) => c.total === 0, 30_000, 'outage rows delivered');
    expect((await readTopic(kafka, topic)).length).toBeGreaterThanOrEqual(50);
  });
});
