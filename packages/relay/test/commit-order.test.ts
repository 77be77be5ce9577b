import { createOutbox } from '@effectively/core';
import { createTestSchema, readTopic, testClient, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { OutboxRelay } from '../src';
import { enqueue, eventIdsOf, laneOfKey, laneOfKeyless, newTopic, outboxCount, outboxIds, topicSize, waitFor, within } from './support/outbox';

/** A promise and the function that resolves it. */
function gate<T = void>(): { promise: Promise<T>; open: (value: T) => void } {
  let open!: (value: T) => void;
  const promise = new Promise<T>((resolve) => (open = resolve));
  return { promise, open };
}

describe(`commit order: rows are published whatever order their transactions commit in (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  let relay: OutboxRelay | undefined;
  const releases: Array<() => void> = [];
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_order');
  });
  afterAll(async () => {
    for (const release of releases) release(); // never leave a test transaction open
    await relay?.stop();
    await s.drop();
  });

  const startRelay = async (): Promise<OutboxRelay> => {
    await relay?.stop();
    relay = new OutboxRelay({ client: testClient(), brokers, db: s.db, databaseUrl, schema: s.schema, pollIntervalMs: 50 });
    await relay.start();
    return relay;
  };

  /** A key whose lane differs from every lane in `avoid`. */
  const keyOutside = async (prefix: string, avoid: number[]): Promise<string> => {
    for (let i = 0; i < 1000; i++) {
      if (!avoid.includes(await laneOfKey(s.db, s.schema, `${prefix}-${i}`))) return `${prefix}-${i}`;
    }
    throw new Error('no key found outside the given lanes');
  };

  it('F30: a transaction that took the lower id but commits last is published too (no id watermark); rows of other lanes and keyless rows do not wait for it', async () => {
    const topic = await newTopic(kafka, 'relay_late');
    const r = await startRelay();
    const writer = createOutbox({ schema: s.schema });
    const keyA = 'late-key';
    const laneA = await laneOfKey(s.db, s.schema, keyA);
    const keyB = await keyOutside('early-key', [laneA]);
    // A keyless row in A's very lane: keyless rows take no lane lock and keep no order.
    let keyless = '';
    for (let i = 0; keyless === '' && i < 5000; i++) if ((await laneOfKeyless(s.db, s.schema, `keyless-${i}`)) === laneA) keyless = `keyless-${i}`;
    expect(keyless).not.toBe('');

    const inserted = gate<string>();
    const release = gate();
    releases.push(() => release.open());
    const txA = s.db.transaction().execute(async (trx) => {
      await writer.publish(trx, { eventId: 'late-a', topic, key: keyA, value: 'A' });
      inserted.open((await outboxIds(trx, s.schema, ['late-a'])).get('late-a') as string);
      await release.promise;
    });
    const idA = BigInt(await inserted.promise);

    // B (another lane) and the keyless row commit while A is open, with higher ids.
    const idB = BigInt((await within(enqueue(s.db, s.schema, [{ eventId: 'early-b', topic, key: keyB, value: 'B' }]), 10_000, 'writer of another lane')).get('early-b') as string);
    const idC = BigInt((await within(enqueue(s.db, s.schema, [{ eventId: keyless, topic, key: null, value: 'C' }]), 10_000, 'keyless writer')).get(keyless) as string);
    expect(idB).toBeGreaterThan(idA);
    expect(idC).toBeGreaterThan(idA);

    // The running relay publishes them (deletes them once Kafka acknowledged) while A is still open.
    await waitFor(() => outboxCount(s.db, s.schema), (n) => n === 0, 20_000, 'B and C published');
    expect(await topicSize(kafka, topic)).toBe(2);

    release.open();
    await txA;
    await waitFor(() => outboxCount(s.db, s.schema), (n) => n === 0, 20_000, 'A published after its late commit');
    expect(await topicSize(kafka, topic)).toBe(3);
    // Read back partition by partition: the keyless row's partition is the partitioner's choice, so only the set is fixed.
    expect(eventIdsOf(await readTopic(kafka, topic)).sort()).toEqual(['early-b', keyless, 'late-a'].sort());
    expect(r.stats.published).toBe(3);
  });

  it('same key: a second writer waits on the lane lock until the first commits, so ids follow commit order; both are published in that order', async () => {
    const topic = await newTopic(kafka, 'relay_same_key');
    await startRelay();
    const writer = createOutbox({ schema: s.schema });
    const key = 'contended';
    const lane = await laneOfKey(s.db, s.schema, key);
    const other = await keyOutside('other', [lane]); // A also locks another lane, first or second in lane order
    const space = `effectively.outbox:${s.schema}`;

    const aReady = gate<{ pid: number; id: string }>();
    const release = gate();
    releases.push(() => release.open());
    const txA = s.db.transaction().execute(async (trx) => {
      const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx);
      await writer.publish(trx, [
        { eventId: 'first-other', topic, key: other, value: 'A0' },
        { eventId: 'first', topic, key, value: 'A1' },
      ]);
      aReady.open({ pid: rows[0]?.pid as number, id: (await outboxIds(trx, s.schema, ['first'])).get('first') as string });
      await release.promise;
    });
    const a = await aReady.promise;

    let bPublished = false;
    const bPid = gate<number>();
    const txB = s.db.transaction().execute(async (trx) => {
      const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx);
      bPid.open(rows[0]?.pid as number);
      await writer.publish(trx, { eventId: 'second', topic, key, value: 'B' });
      bPublished = true;
      return (await outboxIds(trx, s.schema, ['second'])).get('second') as string;
    });
    const b = await bPid.promise;

    // B waits for the advisory lock of the key's lane, which A holds (no sleep: pg_locks says so).
    const lock = async (pid: number, granted: boolean): Promise<number> => {
      const { rows } = await sql<{ n: string }>`
        SELECT count(*) AS n FROM pg_locks
        WHERE locktype = 'advisory' AND pid = ${pid} AND granted = ${granted} AND objsubid = 2 AND objid::bigint = ${lane}
          AND classid::bigint = (hashtext(${space})::bigint & 4294967295)`.execute(s.db);
      return Number(rows[0]?.n ?? 0);
    };
    await waitFor(() => lock(b, false), (n) => n === 1, 10_000, 'B waiting on the lane lock');
    expect(await lock(a.pid, true)).toBe(1);
    expect(bPublished).toBe(false);

    release.open();
    await txA;
    const idB = await within(txB, 10_000, 'B after A committed');
    expect(bPublished).toBe(true);
    expect(BigInt(idB)).toBeGreaterThan(BigInt(a.id));

    await waitFor(() => outboxCount(s.db, s.schema), (n) => n === 0, 20_000, 'both published');
    const messages = await readTopic(kafka, topic);
    expect(eventIdsOf(messages.filter((m) => m.key?.toString() === key))).toEqual(['first', 'second']);
    expect(messages).toHaveLength(3);
  });
});
