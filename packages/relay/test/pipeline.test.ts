import { randomBytes } from 'node:crypto';
import { createTopics, readTopic, testClient, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { OutboxRelay, requeueParked, type OutboxRelayOptions } from '../src';
import { firstOccurrences, jsonValue, orderViolations, outboxRows, publishCommitted, relayTestBed, seqsByKey, waitFor } from './support/lanes';

/**
 * A claim sends several batches back to back: while one is in flight to Kafka, the one before is
 * deleted and the next one read. What must hold: every key in order, a row deleted only after
 * its ack, nothing read ahead sent after a failure, and a row re-queued during a claim still
 * going before the later rows of its key.
 */
describe(`pipelined claims (${testClient()})`, () => {
  const { brokers, kafka, newSchema, stopAfterAll } = relayTestBed();

  const setup = async (prefix: string, topicConfig?: Record<string, string>): Promise<{ s: TestSchema; topic: string }> => {
    const s = await newSchema(prefix);
    const [topic] = await createTopics(kafka, [{ prefix, partitions: 2, ...(topicConfig === undefined ? {} : { config: topicConfig }) }]);
    return { s, topic: topic as string };
  };

  const relayFor = (s: TestSchema, options: Partial<OutboxRelayOptions> = {}): OutboxRelay =>
    stopAfterAll(new OutboxRelay({ client: testClient(), brokers, db: s.db, schema: s.schema, listen: false, parallelClaims: 1, batchSize: 5, ...options }));

  it('one claim sends several batches, each key in commit order, and deletes exactly what Kafka acknowledged', async () => {
    const { s, topic } = await setup('relay_pipe_order');
    const keys = ['a', 'b', 'c', 'd'];
    for (let seq = 0; seq < 12; seq++) await publishCommitted(s.db, s.schema, keys.map((key) => ({ topic, key, value: { seq } })));
    const acked: string[][] = [];
    const relay = relayFor(s, { hooks: { afterKafkaAck: ({ eventIds }) => void acked.push([...eventIds]) } });
    const result = await relay.drainOnce();
    // Batches of 5, several in one claim (the next one is read while the first is in flight).
    expect(result.published).toBeGreaterThanOrEqual(10);
    expect(result).toMatchObject({ fetched: result.published, failed: 0, parked: 0 });
    expect(acked.length).toBe(result.published / 5);
    while ((await relay.drainOnce()).fetched > 0);
    expect(acked.every((ids) => ids.length >= 1 && ids.length <= 5)).toBe(true);
    expect(new Set(acked.flat()).size).toBe(48);
    expect(await outboxRows(s.db, s.schema)).toEqual([]);
    const seqs = await seqsByKey(kafka, topic);
    for (const key of keys) expect(seqs.get(key)).toEqual(Array.from({ length: 12 }, (_, i) => i));
  });

  it('a row re-queued while a claim runs goes before the later rows of its key (a re-queued row is due at once)', async () => {
    const { s, topic } = await setup('relay_pipe_requeue');
    const [parkedId] = await publishCommitted(s.db, s.schema, { topic, key: 'held', value: { seq: 0 } });
    await sql`UPDATE ${sql.id(s.schema, 'outbox')} SET status = 'parked', attempts = 5, last_error = 'test' WHERE event_id = ${parkedId as string}`.execute(s.db);
    await publishCommitted(s.db, s.schema, [1, 2, 3].map((seq) => ({ topic, key: 'held', value: { seq } })));
    for (let seq = 0; seq < 30; seq++) await publishCommitted(s.db, s.schema, { topic, key: `other-${seq % 3}`, value: { seq } });
    let requeued = false;
    const relay = relayFor(s, {
      hooks: {
        // After the first batch's ack, while the claim goes on: an operator re-queues the parked row.
        afterKafkaAck: async () => {
          if (requeued) return;
          requeued = true;
          const { rows } = await sql<{ id: string }>`SELECT id::text AS id FROM ${sql.id(s.schema, 'outbox')} WHERE event_id = ${parkedId as string}`.execute(s.db);
          await requeueParked(s.db, { ids: [rows[0]?.id as string] }, { schema: s.schema });
        },
      },
    });
    await waitFor(
      async () => {
        await relay.drainOnce();
        return outboxRows(s.db, s.schema);
      },
      (rows) => rows.length === 0,
      30_000,
      'outbox drained',
    );
    expect(requeued).toBe(true);
    const seqs = await seqsByKey(kafka, topic);
    expect(seqs.get('held')).toEqual([0, 1, 2, 3]);
  });

  it("after a failed row, the rows read ahead are not sent: the failed row's key waits, other keys go on in order", async () => {
    const { s, topic } = await setup('relay_pipe_fail', { 'max.message.bytes': '2048' });
    const messages: Array<{ topic: string; key: string; value: { seq: number; blob?: string } }> = [];
    for (let seq = 0; seq < 20; seq++) {
      for (const key of ['p', 'q', 'r']) messages.push({ topic, key, value: key === 'p' && seq === 3 ? { seq, blob: randomBytes(5_000).toString('hex') } : { seq } });
    }
    for (const m of messages) await publishCommitted(s.db, s.schema, m);
    const relay = relayFor(s, {
      maxAttempts: 2,
      retryDelayMs: 50,
      maxRetryDelayMs: 100,
      ...(testClient() === 'kafkajs' ? { producer: { retry: { retries: 1, initialRetryTime: 50, maxRetryTime: 200 } } } : { platformatic: { retries: 2, retryDelay: 50 } }),
    });
    const rows = await waitFor(
      async () => {
        await relay.drainOnce();
        return outboxRows(s.db, s.schema);
      },
      (rs) => rs.every((r) => r.key === 'p') && rs.some((r) => r.status === 'parked'),
      30_000,
      'the oversized row parked, other keys published',
    );
    // The oversized row and every later row of its key are still there.
    expect(rows.map((r) => r.status)).toEqual(['parked', ...Array.from({ length: 16 }, () => 'pending')]);
    const seqs = await seqsByKey(kafka, topic);
    expect(seqs.get('p')).toEqual([0, 1, 2]);
    expect(seqs.get('q')).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(seqs.get('r')).toEqual(Array.from({ length: 20 }, (_, i) => i));
    const all = firstOccurrences(await readTopic(kafka, topic));
    expect(orderViolations(all, (m) => m.key?.toString() ?? '', (m) => jsonValue<{ seq: number }>(m).seq)).toEqual([]);
  });
});
