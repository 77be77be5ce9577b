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
 * leader) must not hold back the rows of other keys: at most one send round trip (before the fix
 * they waited 2-30 s behind kafkajs's own retries). Only rows of the failing row's topic and key
 * wait behind it.
 *
 * Measured side by side, so the bound holds on a loaded machine: two relays with the same
 * settings run at once in this process, one on an outbox holding the bad row, one on an outbox
 * without it (the control), and each of 60 rows of other keys is committed to both outboxes at
 * the same moment. The control's delays (commit to receipt by a consumer) are what this machine
 * takes now to deliver a row; the bad row may add at most about one send round trip to them:
 * the worst delay with the bad row stays within the control's worst delay plus max(1 s, the
 * control's worst delay). Kafkajs's retries behind a bad row (seconds) exceed that at any load.
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

  /**
   * Commits 60 rows of 20 keys (3 each) to each outbox, one transaction per row, the same row to
   * both at once, 10 ms apart; returns commit times by event id, per outbox.
   */
  const writeOthers = async (bad: TestSchema, control: TestSchema, topic: string): Promise<{ bad: Map<string, number>; control: Map<string, number> }> => {
    const committed = { bad: new Map<string, number>(), control: new Map<string, number>() };
    const commit = async (s: TestSchema, into: Map<string, number>, key: string, seq: number): Promise<void> => {
      const [id] = await publishCommitted(s.db, s.schema, { topic, key, value: { key, seq } });
      into.set(id as string, Date.now());
    };
    for (let i = 0; i < 60; i++) {
      const key = `other-${i % 20}`;
      const seq = Math.floor(i / 20);
      await Promise.all([commit(bad, committed.bad, key, seq), commit(control, committed.control, key, seq)]);
      await sleep(10);
    }
    return committed;
  };

  /** Waits for every committed row and returns the per-row delays, commit to receipt (ms). */
  const delays = async (committed: Map<string, number>, received: Map<string, number>): Promise<number[]> => {
    await waitFor(() => [...committed.keys()].filter((id) => !received.has(id)).length, (n) => n === 0, 60_000, 'all other rows received');
    return [...committed].map(([id, at]) => (received.get(id) as number) - at);
  };

  const worst = (d: readonly number[]): number => Math.max(...d);
  const summary = (d: readonly number[]): string => {
    const sorted = [...d].sort((a, b) => a - b);
    return `p50 ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted[sorted.length - 1]} ms`;
  };

  /**
   * The rows of other keys, committed to the outbox with the bad row and to the control outbox
   * at the same moments: their delays with the bad row stay within the control's worst delay
   * plus max(1 s, that delay) — about one more round trip, never kafkajs's retries.
   */
  const compare = async (name: string, bad: TestSchema, control: TestSchema, topic: string, received: Map<string, number>): Promise<void> => {
    const committed = await writeOthers(bad, control, topic);
    const withBad = await delays(committed.bad, received);
    const without = await delays(committed.control, received);
    process.stdout.write(`isolation ${name}: commit-to-receive with the bad row ${summary(withBad)}; control (same rows, same moments, no bad row) ${summary(without)}; over ${withBad.length} rows each\n`);
    const bound = worst(without) + Math.max(1_000, worst(without));
    expect(withBad.filter((ms) => ms > bound)).toEqual([]);
  };

  it('a row for a topic that does not exist: every other key’s row arrives within about one send round trip of the control', async () => {
    const [s, control] = await Promise.all([newSchema(), newSchema()]);
    const [topic] = (await createTopics(kafka, [{ prefix: 'isolation_ok', partitions: 3 }])) as [string];
    const missing = uniqueName('isolation_missing'); // never created; auto-creation is off
    const received = await receiveTimes([topic]);
    const [relay] = await Promise.all([startRelay(s), startRelay(control)]);
    const [ghost] = await publishCommitted(s.db, s.schema, { topic: missing, key: 'ghost', value: { seq: 0 } });
    const [behind] = await publishCommitted(s.db, s.schema, { topic: missing, key: 'ghost', value: { seq: 1 } });
    await compare('unknown topic', s, control, topic, received);
    // The bad row backs off with its error; the row of its key behind it was never tried.
    // (A row reaches the consumer before its claim commits the delete: wait for the outbox to settle.)
    const rows = await waitFor(() => outboxRows(s.db, s.schema), (rs) => rs.length === 2, 10_000, 'others deleted');
    expect(rows.map((r) => r.eventId)).toEqual([ghost, behind]);
    expect(rows[0]?.attempts).toBeGreaterThanOrEqual(1);
    expect(rows[0]?.lastError).toMatch(/does not host this topic-partition/);
    expect(rows[1]).toMatchObject({ status: 'pending', attempts: 0, lastError: null });
    expect(relay.health().status).toBe('ok');
  });

  it('a record too large for its topic, among rows of other keys of the same topic: they arrive within about one send round trip of the control', async () => {
    const [s, control] = await Promise.all([newSchema(), newSchema()]);
    const [topic] = (await createTopics(kafka, [{ prefix: 'isolation_large', partitions: 3, config: { 'max.message.bytes': '32768' } }])) as [string];
    const received = await receiveTimes([topic]);
    const [relay] = await Promise.all([startRelay(s), startRelay(control)]);
    const [big] = await publishCommitted(s.db, s.schema, { topic, key: 'big', value: { blob: randomBytes(50_000).toString('hex') } });
    const [behind] = await publishCommitted(s.db, s.schema, { topic, key: 'big', value: { seq: 1 } });
    await compare('too large', s, control, topic, received);
    const rows = await waitFor(() => outboxRows(s.db, s.schema), (rs) => rs.length === 2, 10_000, 'others deleted');
    expect(rows.map((r) => r.eventId)).toEqual([big, behind]);
    expect(rows[0]?.lastError).toMatch(/larger than the max message size/);
    expect(rows[1]).toMatchObject({ status: 'pending', attempts: 0 });
    expect(received.has(big as string) || received.has(behind as string)).toBe(false);
    expect(relay.health().status).toBe('ok');
  });

  it('a topic whose partition has no leader (the real kafkajs error, injected through the producer seam): other topics flow, its rows wait without being parked', async () => {
    const [s, control] = await Promise.all([newSchema(), newSchema()]);
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
    // The control goes through the same seam (it never sends to the leaderless topic).
    const [relay] = await Promise.all([startRelay(s, leaderless), startRelay(control, leaderless)]);
    const [first] = await publishCommitted(s.db, s.schema, { topic: stuck, key: 'stuck', value: { seq: 0 } });
    const [second] = await publishCommitted(s.db, s.schema, { topic: stuck, key: 'stuck', value: { seq: 1 } });
    await compare('leader not available', s, control, topic, received);
    const rows = await waitFor(() => outboxRows(s.db, s.schema), (rs) => rs.length === 2, 10_000, 'others deleted');
    expect(rows.map((r) => r.eventId)).toEqual([first, second]);
    expect(rows.every((r) => r.status === 'pending')).toBe(true);
    expect(rows[1]?.attempts).toBe(0);
    expect(relay.stats.parked).toBe(0);
    // The cluster answers (other topics are acknowledged): the relay stays healthy.
    expect(relay.health().status).toBe('ok');
  });
});
