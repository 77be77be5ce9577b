import { createTestSchema, readTopic, testClient, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { dedupe, enqueue, eventIdsOf, header, idsPerKey, makeMessages, newTopic, outboxCount, outOfOrderKeys, startChildRelay, topicSize, waitFor, within, type ChildRelay } from './support/outbox';

/**
 * The dangerous point of the relay: Kafka acknowledged a batch and the relay dies before the
 * claim transaction that deletes those rows commits. The rows must stay and be sent again
 * (at least once); a consumer deduplicating by event-id then sees each row once, in key order.
 */
describe(`relay killed after Kafka acknowledged, before the rows were deleted (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  const children: ChildRelay[] = [];
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_crash');
  });
  afterAll(async () => {
    await Promise.allSettled(children.map((c) => c.kill()));
    await s.drop();
  });

  const env = (extra: Record<string, string> = {}): Record<string, string> => ({
    DATABASE_URL: databaseUrl,
    KAFKA_BROKERS: brokers.join(','),
    SCHEMA: s.schema,
    BATCH_SIZE: '50',
    POLL_INTERVAL_MS: '50',
    LEASE_MS: '1000', // a dead relay's lanes return after 1 s
    ...extra,
  });
  const child = async (extra: Record<string, string> = {}): Promise<ChildRelay> => {
    const c = await startChildRelay(env(extra));
    children.push(c);
    return c;
  };

  it('SIGKILL in afterKafkaAck, four times over 4,500 rows: acknowledged rows are sent again, distinct event ids == rows, order of first occurrences per key kept, outbox empties (F32)', async () => {
    const topic = await newTopic(kafka, 'relay_crash', 3);
    const idOf = new Map<string, string>(); // event id -> outbox id, captured when written
    const write = async (prefix: string, transactions: number): Promise<void> => {
      for (let t = 0; t < transactions; t++) for (const [e, id] of await enqueue(s.db, s.schema, makeMessages(topic, 100, 20, prefix, t * 100))) idOf.set(e, id);
    };
    await write('c', 30);
    expect(idOf.size).toBe(3000);

    // 1. Dies at its first acknowledgement: Kafka has the batch, the outbox still has every row.
    const first = await child({ CRASH_AFTER_ACKS: '1' });
    expect(await within(first.exited, 30_000, 'first child killing itself')).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await outboxCount(s.db, s.schema)).toBe(3000);
    const acked = await topicSize(kafka, topic);
    expect(acked).toBeGreaterThan(0);
    let excess = acked; // records in Kafka beyond the rows deleted from the outbox
    const checkExcess = async (): Promise<void> => {
      const now = (await topicSize(kafka, topic)) - (idOf.size - (await outboxCount(s.db, s.schema)));
      expect(now).toBeGreaterThan(excess); // this crash, too, left acknowledged rows in the outbox
      excess = now;
    };

    // Three more relays die after a few batches; more rows are committed before each starts.
    for (const n of [4, 2, 6]) {
      await write(`d${n}`, 5);
      const c = await child({ CRASH_AFTER_ACKS: String(n) });
      expect(await within(c.exited, 30_000, `child crashing after ${n} acks`)).toEqual({ code: null, signal: 'SIGKILL' });
      await checkExcess();
    }
    const total = idOf.size;
    expect(total).toBe(4500);
    expect(await outboxCount(s.db, s.schema)).toBeGreaterThan(0);

    // A healthy relay takes the lanes once the dead ones' leases ran out and drains the rest.
    const last = await child();
    await waitFor(() => outboxCount(s.db, s.schema), (n) => n === 0, 40_000, 'outbox drained');
    expect(await within(last.terminate(), 30_000, 'clean stop')).toEqual({ code: 0, signal: null });
    expect(last.stats()?.published).toBeGreaterThan(0);

    const messages = await readTopic(kafka, topic);
    const ids = eventIdsOf(messages);
    expect(ids.every((id) => id !== undefined)).toBe(true);
    // Duplicates exist, and they are exactly the batches acknowledged but not deleted at the crashes.
    expect(messages.length).toBeGreaterThan(total);
    expect(messages.length - total).toBe(excess);
    // Downstream, deduplicating by event-id: every row once, nothing else.
    const applied = dedupe(messages);
    expect(applied).toHaveLength(total);
    expect(new Set(applied.map((m) => header(m, 'event-id')))).toEqual(new Set(idOf.keys()));
    const perKey = idsPerKey(messages, idOf);
    expect(perKey.size).toBe(80);
    expect(outOfOrderKeys(perKey)).toEqual([]);
  });
});
