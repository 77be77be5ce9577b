import { randomInt } from 'node:crypto';
import { createOutbox } from '@effectively/core';
import { createTestSchema, createTopics, readTopic, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import {
  firstOccurrences,
  header,
  jsonValue,
  killAll,
  laneRows,
  lanesByOwner,
  orderViolations,
  outboxCounts,
  publishCommitted,
  sleep,
  startChildRelay,
  waitFor,
  type ChildRelay,
} from './support/lanes';

const LANES = 64;

/**
 * Several relays share the outbox's lanes. Order is checked against COMMIT order, not id order:
 * each writer transaction publishes its row first, waits a little, then bumps its key's counter
 * (`UPDATE … RETURNING n`, row-locked until commit, so n follows commit order per key) and
 * records tag → n. Without the writers' lane lock, a transaction that took a lower outbox id but
 * committed later would reach Kafka before one that committed earlier and the n's would go down.
 */
describe('outbox lanes shared by several relays', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const children: ChildRelay[] = [];
  const schemas: TestSchema[] = [];

  // Each test has its own schema: relays of one test (a SIGKILLed one stays registered in
  // `outbox_relays` until its heartbeat is old enough to be cleaned up) never meet another's.
  const newSchema = async (prefix: string): Promise<TestSchema> => {
    const created = await createTestSchema(databaseUrl, prefix, { max: 20 });
    schemas.push(created);
    return created;
  };
  afterAll(async () => {
    await killAll(children);
    await Promise.all(schemas.map((x) => x.drop()));
  });

  const env = (s: TestSchema, relayId: string, leaseMs: number): Record<string, string> => ({
    DATABASE_URL: databaseUrl,
    KAFKA_BROKERS: brokers.join(','),
    SCHEMA: s.schema,
    LEASE_MS: String(leaseMs),
    RELAY_ID: relayId,
    BATCH_SIZE: '50',
    POLL_INTERVAL_MS: '50',
  });

  const start = async (s: TestSchema, relayId: string, leaseMs: number): Promise<ChildRelay> => {
    const child = await startChildRelay(env(s, relayId, leaseMs));
    children.push(child);
    return child;
  };

  it('three relays, 2,400 rows over 40 keys from 12 concurrent writers, one relay SIGKILLed mid-run: its lanes are taken over after its lease, every row arrives, per-key commit order holds', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'relay_lanes', partitions: 4 }])) as [string];
    const s = await newSchema('relay_lanes');
    await sql`CREATE TABLE ${sql.id(s.schema, 'counters')} (key text PRIMARY KEY, n bigint NOT NULL DEFAULT 0)`.execute(s.db);
    await sql`CREATE TABLE ${sql.id(s.schema, 'commits')} (tag text PRIMARY KEY, key text NOT NULL, n bigint NOT NULL)`.execute(s.db);
    const keys = Array.from({ length: 40 }, (_, i) => `key-${i}`);
    await sql`INSERT INTO ${sql.id(s.schema, 'counters')} (key) SELECT unnest(${keys}::text[])`.execute(s.db);

    const ids = ['lanes-a', 'lanes-b', 'lanes-c'].map((x) => `${x}-${randomInt(1e9)}`) as [string, string, string];
    const [a, b, c] = (await Promise.all(ids.map((id) => start(s, id, 1_500)))) as [ChildRelay, ChildRelay, ChildRelay];
    expect([a.relayId, b.relayId, c.relayId]).toEqual(ids);

    // Who owned lanes, sampled through the run.
    const maxOwned = new Map<string, number>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const [owner, lanes] of lanesByOwner(await laneRows(s.db, s.schema))) maxOwned.set(owner, Math.max(maxOwned.get(owner) ?? 0, lanes.length));
        await sleep(100);
      }
    })();

    // Lanes are shared out before the writers start (the first relay up takes them all, then hands back its surplus).
    await waitFor(() => laneRows(s.db, s.schema), (lanes) => ids.every((id) => lanes.some((l) => l.owner === id)), 30_000, 'every relay owns a lane');

    const outbox = createOutbox({ schema: s.schema });
    const total = 2_400;
    const writers = 12;
    let written = 0;
    const write = async (w: number): Promise<void> => {
      for (let i = 0; written < total; i++) {
        written++;
        const key = keys[randomInt(keys.length)] as string;
        const tag = `w${w}-${i}`;
        await s.db.transaction().execute(async (trx) => {
          await outbox.publish(trx, { topic, key, value: { tag, key } });
          await sleep(randomInt(4));
          const { rows } = await sql<{ n: string }>`UPDATE ${sql.id(s.schema, 'counters')} SET n = n + 1 WHERE key = ${key} RETURNING n::text AS n`.execute(trx);
          await sql`INSERT INTO ${sql.id(s.schema, 'commits')} (tag, key, n) VALUES (${tag}, ${key}, ${rows[0]?.n}::bigint)`.execute(trx);
        });
      }
    };
    const writing = Promise.all(Array.from({ length: writers }, (_, w) => write(w)));

    // Mid-run: C dies without handing anything back.
    await waitFor(() => written, (n) => n >= total / 3, 60_000, 'a third written');
    const beforeKill = await laneRows(s.db, s.schema);
    const cLanes = beforeKill.filter((l) => l.owner === c.relayId).map((l) => l.lane);
    expect(cLanes.length).toBeGreaterThan(0);
    await c.kill();
    expect((await c.exited).signal).toBe('SIGKILL');
    await writing;

    // Everything drains through A and B, and C's lanes end up with them.
    await waitFor(() => outboxCounts(s.db, s.schema), (x) => x.total === 0, 60_000, 'outbox drained');
    const lanes = await waitFor(
      () => laneRows(s.db, s.schema),
      (ls) => ls.every((l) => l.owner === a.relayId || l.owner === b.relayId),
      30_000,
      'all lanes owned by the survivors',
    );
    sampling = false;
    await sampler;
    expect(lanes.filter((l) => l.owner === c.relayId)).toEqual([]);
    const byOwner = lanesByOwner(lanes);
    expect(byOwner.get(a.relayId)?.length ?? 0).toBeGreaterThan(0);
    expect(byOwner.get(b.relayId)?.length ?? 0).toBeGreaterThan(0);
    expect((byOwner.get(a.relayId)?.length ?? 0) + (byOwner.get(b.relayId)?.length ?? 0)).toBe(LANES);
    // Each of C's lanes was leased anew (epoch bumped) by a survivor.
    const epochBefore = new Map(beforeKill.map((l) => [l.lane, l.epoch]));
    for (const lane of cLanes) expect(lanes[lane]?.epoch).toBeGreaterThan(epochBefore.get(lane) as number);
    // Every relay held lanes during the run.
    for (const id of ids) expect(maxOwned.get(id) ?? 0).toBeGreaterThan(0);

    // Downstream: one copy of each row (after dedup by event-id), in commit order per key.
    const { rows: commits } = await sql<{ tag: string; key: string; n: string }>`SELECT tag, key, n::text AS n FROM ${sql.id(s.schema, 'commits')}`.execute(s.db);
    expect(commits).toHaveLength(total);
    const nOf = new Map(commits.map((r) => [r.tag, Number(r.n)]));
    const messages = await readTopic(kafka, topic);
    const firsts = firstOccurrences(messages);
    expect(firsts).toHaveLength(total);
    expect(new Set(messages.map((m) => header(m, 'event-id'))).size).toBe(total);
    const received = firsts.map((m) => ({ kafkaKey: m.key?.toString(), partition: m.partition, ...jsonValue<{ tag: string; key: string }>(m) }));
    expect(received.filter((m) => m.kafkaKey !== m.key || !nOf.has(m.tag))).toEqual([]);
    expect(new Set(received.map((m) => m.tag)).size).toBe(total);
    // A key lives in one partition.
    const partitionOf = new Map<string, Set<number>>();
    for (const m of received) partitionOf.set(m.key, (partitionOf.get(m.key) ?? new Set()).add(m.partition));
    expect([...partitionOf.values()].every((p) => p.size === 1)).toBe(true);
    expect(orderViolations(received, (m) => m.key, (m) => nOf.get(m.tag) as number)).toEqual([]);
    // Per key, n runs 1..count with no gap: every committed transaction arrived.
    const perKey = new Map<string, number[]>();
    for (const m of received) perKey.set(m.key, [...(perKey.get(m.key) ?? []), nOf.get(m.tag) as number]);
    for (const [, ns] of perKey) expect(ns).toEqual(ns.map((_, i) => i + 1));

    expect((await Promise.all([a.terminate(), b.terminate()])).map((e) => e.code)).toEqual([0, 0]);
  });

  it('a relay stopped with SIGTERM hands its lanes back at once, long before its lease would run out', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'relay_handback', partitions: 2 }])) as [string];
    const s = await newSchema('relay_handback');
    const leaseMs = 20_000;
    const a = await start(s, `handback-a-${randomInt(1e9)}`, leaseMs);
    const b = await start(s, `handback-b-${randomInt(1e9)}`, leaseMs);
    await waitFor(() => laneRows(s.db, s.schema), (ls) => ls.some((l) => l.owner === a.relayId) && ls.some((l) => l.owner === b.relayId), 30_000, 'both own lanes');
    // Some traffic through both.
    await publishCommitted(s.db, s.schema, Array.from({ length: 200 }, (_, i) => ({ topic, key: `before-${i % 50}`, value: { i } })));
    await waitFor(() => outboxCounts(s.db, s.schema), (x) => x.total === 0, 30_000, 'first rows published');

    const before = await laneRows(s.db, s.schema);
    const bLanes = before.filter((l) => l.owner === b.relayId);
    expect(bLanes.length).toBeGreaterThan(0);
    // B's leases run at least this long from now; a handover after a lease expiry would come later.
    const earliestExpiry = Math.min(...bLanes.map((l) => l.leaseUntil));

    expect((await b.terminate()).code).toBe(0);
    expect(b.stats()).toMatchObject({ lanes: 0 });
    const after = await laneRows(s.db, s.schema);
    expect(after[0]?.now).toBeLessThan(earliestExpiry);
    expect(after.filter((l) => l.owner === b.relayId)).toEqual([]);
    for (const l of bLanes) {
      const now = after[l.lane];
      expect(now?.owner === null || now?.owner === a.relayId).toBe(true);
    }
    const { rows: relays } = await sql<{ relay_id: string }>`SELECT relay_id FROM ${sql.id(s.schema, 'outbox_relays')}`.execute(s.db);
    expect(relays.map((r) => r.relay_id)).toEqual([a.relayId]);

    // Rows in every lane, B's former ones included, are published by A, and A holds every lane, all before B's lease would have expired.
    const afterKeys = Array.from({ length: 200 }, (_, i) => `after-${i}`);
    const { rows: keyLanes } = await sql<{ lane: number }>`SELECT DISTINCT ${sql.id(s.schema, 'outbox_lane')}(convert_to(k, 'UTF8'), NULL) AS lane FROM unnest(${afterKeys}::text[]) AS k`.execute(s.db);
    expect(keyLanes.some((r) => bLanes.some((l) => l.lane === r.lane))).toBe(true);
    const eventIds = await publishCommitted(s.db, s.schema, Array.from({ length: 400 }, (_, i) => ({ topic, key: afterKeys[i % 200] as string, value: { i } })));
    await waitFor(() => outboxCounts(s.db, s.schema), (x) => x.total === 0, 30_000, 'rows after the stop published');
    const final = await waitFor(() => laneRows(s.db, s.schema), (ls) => ls.every((l) => l.owner === a.relayId), 30_000, 'A owns every lane');
    expect(final[0]?.now).toBeLessThan(earliestExpiry);
    const onTopic = new Set((await readTopic(kafka, topic)).map((m) => header(m, 'event-id')));
    expect(eventIds.every((id) => onTopic.has(id))).toBe(true);
    expect((await a.terminate()).code).toBe(0);
  });
});
