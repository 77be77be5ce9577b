import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { createTestSchema, createTopics, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import type { Consumer } from 'kafkajs';
import { createKafkajsProducer, createRelay, type OutboxRelay, type ProducerClient } from '../src';
import { header, outboxRows, publishCommitted, sleep, waitFor } from './support/lanes';

/** The error kafkajs throws for a Kafka error code (its own factory, not a look-alike). */
const kafkajsError = (code: number): Error => (createRequire(__filename)('kafkajs/src/protocol/error') as { createErrorFromCode(code: number): Error }).createErrorFromCode(code);

/**
 * One row Kafka refuses (a topic that does not exist, a record too large, a partition without a
 * leader) must not hold back the rows of other keys: they reach a consumer within one send round
 * trip of their commit (≤ 1 s here, an order-of-magnitude bound that holds on a loaded machine;
 * before the fix they waited 2-30 s behind kafkajs's own retries). Only rows of the failing row's
 * topic and key wait behind it.
 */
describe('a failing row never holds back other keys', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const schemas: TestSchema[] = [];
  const relays: OutboxRelay[] = [];
  const consumers: Consumer[] = [];

  afterAll(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await Promise.all(consumers.map((c) => c.disconnect()));
    await Promise.all(schemas.map((s) => s.drop()));
  });

  const newSchema = async (): Promise<TestSchema> => {
    const s = await createTestSchema(databaseUrl, 'relay_isolation');
    schemas.push(s);
    return s;
  };

  /** Default relay settings (as the CLI runs it), optionally with a wrapped producer. */
  const startRelay = async (s: TestSchema, producerClient?: (inner: ProducerClient) => ProducerClient): Promise<OutboxRelay> => {
    const relay = createRelay({
      brokers,
      db: s.db,
      databaseUrl,
      schema: s.schema,
      ...(producerClient === undefined ? {} : { producerClient: (settings) => producerClient(createKafkajsProducer(settings)) }),
    });
    relays.push(relay);
    await relay.start();
    await waitFor(() => relay.health().status, (st) => st === 'ok', 30_000, 'relay healthy');
    return relay;
  };

  /** A consumer on `topics` that records when each event id arrived; resolves once it has joined. */
  const receiveTimes = async (topics: string[]): Promise<Map<string, number>> => {
    const received = new Map<string, number>();
    const consumer = kafka.consumer({ groupId: uniqueName('isolation'), maxWaitTimeInMs: 100 });
    consumers.push(consumer);
    let joined = false;
    consumer.on(consumer.events.GROUP_JOIN, () => (joined = true));
    await consumer.connect();
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const id = header({ headers: message.headers ?? {} } as never, 'event-id');
        if (id !== undefined && !received.has(id)) received.set(id, Date.now());
      },
    });
    await waitFor(() => joined, (j) => j, 30_000, 'consumer joined');
    await sleep(300);
    return received;
  };

  /** Commits 60 rows of 20 keys (3 each), one transaction per row, 10 ms apart; returns commit times by event id. */
  const writeOthers = async (s: TestSchema, topic: string): Promise<Map<string, number>> => {
    const committed = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      const key = `other-${i % 20}`;
      const [id] = await publishCommitted(s.db, s.schema, { topic, key, value: { key, seq: Math.floor(i / 20) } });
      committed.set(id as string, Date.now());
      await sleep(10);
    }
    return committed;
  };

  /** Waits for every committed row and returns the per-row delays, commit to receipt (ms). */
  const delays = async (committed: Map<string, number>, received: Map<string, number>): Promise<number[]> => {
    await waitFor(() => [...committed.keys()].filter((id) => !received.has(id)).length, (n) => n === 0, 60_000, 'all other rows received');
    return [...committed].map(([id, at]) => (received.get(id) as number) - at);
  };

  const report = (name: string, d: number[]): void => {
    const sorted = [...d].sort((a, b) => a - b);
    process.stdout.write(`isolation ${name}: commit-to-receive p50 ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted[sorted.length - 1]} ms over ${d.length} rows\n`);
  };

  it('a row for a topic that does not exist: every other key’s row arrives within 1 s of its commit', async () => {
    const s = await newSchema();
    const [topic] = (await createTopics(kafka, [{ prefix: 'isolation_ok', partitions: 3 }])) as [string];
    const missing = uniqueName('isolation_missing'); // never created; auto-creation is off
    const received = await receiveTimes([topic]);
    const relay = await startRelay(s);
    const [ghost] = await publishCommitted(s.db, s.schema, { topic: missing, key: 'ghost', value: { seq: 0 } });
    const [behind] = await publishCommitted(s.db, s.schema, { topic: missing, key: 'ghost', value: { seq: 1 } });
    const d = await delays(await writeOthers(s, topic), received);
    report('unknown topic', d);
    expect(d.filter((ms) => ms > 1_000)).toEqual([]);
    // The bad row backs off with its error; the row of its key behind it was never tried.
    // (A row reaches the consumer before its claim commits the delete: wait for the outbox to settle.)
    const rows = await waitFor(() => outboxRows(s.db, s.schema), (rs) => rs.length === 2, 10_000, 'others deleted');
    expect(rows.map((r) => r.eventId)).toEqual([ghost, behind]);
    expect(rows[0]?.attempts).toBeGreaterThanOrEqual(1);
    expect(rows[0]?.lastError).toMatch(/does not host this topic-partition/);
    expect(rows[1]).toMatchObject({ status: 'pending', attempts: 0, lastError: null });
    expect(relay.health().status).toBe('ok');
  });

  it('a record too large for its topic, among rows of other keys of the same topic: they arrive within 1 s of their commit', async () => {
    const s = await newSchema();
    const [topic] = (await createTopics(kafka, [{ prefix: 'isolation_large', partitions: 3, config: { 'max.message.bytes': '32768' } }])) as [string];
    const received = await receiveTimes([topic]);
    const relay = await startRelay(s);
    const [big] = await publishCommitted(s.db, s.schema, { topic, key: 'big', value: { blob: randomBytes(50_000).toString('hex') } });
    const [behind] = await publishCommitted(s.db, s.schema, { topic, key: 'big', value: { seq: 1 } });
    const d = await delays(await writeOthers(s, topic), received);
    report('too large', d);
    expect(d.filter((ms) => ms > 1_000)).toEqual([]);
    const rows = await waitFor(() => outboxRows(s.db, s.schema), (rs) => rs.length === 2, 10_000, 'others deleted');
    expect(rows.map((r) => r.eventId)).toEqual([big, behind]);
    expect(rows[0]?.lastError).toMatch(/larger than the max message size/);
    expect(rows[1]).toMatchObject({ status: 'pending', attempts: 0 });
    expect(received.has(big as string) || received.has(behind as string)).toBe(false);
    expect(relay.health().status).toBe('ok');
  });

  it('a topic whose partition has no leader (the real kafkajs error, injected through the producer seam): other topics flow, its rows wait without being parked', async () => {
    const s = await newSchema();
    const [topic, stuck] = (await createTopics(kafka, [
      { prefix: 'isolation_flow', partitions: 3 },
      { prefix: 'isolation_leaderless', partitions: 1 },
    ])) as [string, string];
    const received = await receiveTimes([topic]);
    const leaderless = (inner: ProducerClient): ProducerClient => ({
      ...inner,
      sendBatch: async (batches) => {
        if (batches.some((b) => b.topic === stuck)) throw kafkajsError(5); // LEADER_NOT_AVAILABLE, as kafkajs throws it
        await inner.sendBatch(batches);
      },
    });
    const relay = await startRelay(s, leaderless);
    const [first] = await publishCommitted(s.db, s.schema, { topic: stuck, key: 'stuck', value: { seq: 0 } });
    const [second] = await publishCommitted(s.db, s.schema, { topic: stuck, key: 'stuck', value: { seq: 1 } });
    const d = await delays(await writeOthers(s, topic), received);
    report('leader not available', d);
    expect(d.filter((ms) => ms > 1_000)).toEqual([]);
    const rows = await waitFor(() => outboxRows(s.db, s.schema), (rs) => rs.length === 2, 10_000, 'others deleted');
    expect(rows.map((r) => r.eventId)).toEqual([first, second]);
    expect(rows.every((r) => r.status === 'pending')).toBe(true);
    expect(rows[1]?.attempts).toBe(0);
    expect(relay.stats.parked).toBe(0);
    // The cluster answers (other topics are acknowledged): the relay stays healthy.
    expect(relay.health().status).toBe('ok');
  });
});
