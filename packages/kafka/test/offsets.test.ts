import type { Metrics, MetricLabels } from '@effectively/core';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import type { Admin } from 'kafkajs';
import pino from 'pino';
import { IdempotentConsumer, type IdempotentConsumerOptions } from '../src';
import { apply, createLedger, totals, waitFor, type Entry } from './support/ledger';

/** Counts what the consumer reports. */
class RecordingMetrics implements Metrics {
  readonly counters: Array<{ name: string; labels: MetricLabels; value: number }> = [];
  increment(name: string, labels: MetricLabels = {}, value = 1): void {
    this.counters.push({ name, labels, value });
  }
  observe(): void {}
  set(): void {}
}

/**
 * The committed offset reaches the high watermark once everything is settled, transaction
 * markers and aborted records included; a committed offset that fell out of the log resumes at
 * the earliest record still there, said at warn and counted.
 */
describe(`committed offsets: to the end of the log, and never past records still in it (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let admin: Admin;
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'offsets');
    await createLedger(s.db, s.schema);
    admin = kafka.admin();
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.disconnect();
    await s?.drop();
  });

  const entry = (account: string): string => JSON.stringify({ account, amount: 1 });
  const consumer = (topic: string, group: string, extra: Partial<IdempotentConsumerOptions<Entry>> = {}): IdempotentConsumer<Entry> =>
    new IdempotentConsumer<Entry>({ brokers, groupId: group, topics: [topic], db: s.db, schema: s.schema, handler: async (event, { trx }) => apply(trx, s.schema, event.value), client: testClient(), ...extra });
  const committed = async (group: string, topic: string): Promise<string | undefined> => (await admin.fetchOffsets({ groupId: group, topics: [topic] }))[0]?.partitions[0]?.offset;
  const highWatermark = async (topic: string): Promise<string | undefined> => (await admin.fetchTopicOffsets(topic))[0]?.high;
  const atEnd = async (group: string, topic: string): Promise<{ committed: string | undefined; end: string | undefined }> => ({ committed: await committed(group, topic), end: await highWatermark(topic) });

  /** Writes `accounts` in one Kafka transaction, committed or aborted. */
  const transaction = async (topic: string, accounts: string[], outcome: 'commit' | 'abort'): Promise<void> => {
    const producer = kafka.producer({ transactionalId: uniqueName('tx'), idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      const txn = await producer.transaction();
      await txn.send({ topic, messages: accounts.map((a) => ({ key: 'k', value: entry(a), headers: { 'event-id': a } })) });
      await (outcome === 'commit' ? txn.commit() : txn.abort());
    } finally {
      await producer.disconnect();
    }
  };

  it('a transactional topic (committed, aborted, committed, trailing aborted): committed offset = high watermark, also after a restart whose fetch holds only markers', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'offsets_tx', partitions: 1 }])) as [string];
    await transaction(topic, ['tx-a', 'tx-b', 'tx-c'], 'commit');
    await transaction(topic, ['tx-aborted-1', 'tx-aborted-2'], 'abort');
    await transaction(topic, ['tx-d', 'tx-e', 'tx-f'], 'commit');
    await transaction(topic, ['tx-aborted-3', 'tx-aborted-4'], 'abort');
    const group = uniqueName('g');
    const first = consumer(topic, group);
    await first.start();
    try {
      await waitFor(() => totals(s.db, s.schema), (t) => t['tx-f']?.applied === 1, 60_000);
      const position = await waitFor(() => atEnd(group, topic), (x) => x.committed === x.end, 30_000);
      expect(position.committed).toBe(position.end);
    } finally {
      await first.stop();
    }
    // More aborted transactions: the restarted member's fetches hold nothing but markers and aborted records.
    await transaction(topic, ['tx-aborted-5'], 'abort');
    await transaction(topic, ['tx-aborted-6', 'tx-aborted-7'], 'abort');
    const second = consumer(topic, group);
    await second.start();
    try {
      const position = await waitFor(() => atEnd(group, topic), (x) => x.committed === x.end, 30_000);
      expect(position.committed).toBe(position.end);
      expect(second.stats.processed).toBe(0);
    } finally {
      await second.stop();
    }
    const t = await totals(s.db, s.schema);
    for (const a of ['tx-a', 'tx-b', 'tx-c', 'tx-d', 'tx-e', 'tx-f']) expect(t[a]).toEqual({ total: 1, applied: 1 });
    expect(Object.keys(t).filter((a) => a.startsWith('tx-aborted'))).toEqual([]);
  });

  it('a topic that holds only an aborted transaction: committed offset = high watermark', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'offsets_markers', partitions: 1 }])) as [string];
    await transaction(topic, ['only-aborted-1', 'only-aborted-2'], 'abort');
    const group = uniqueName('g');
    const c = consumer(topic, group);
    await c.start();
    try {
      const position = await waitFor(() => atEnd(group, topic), (x) => x.committed === x.end, 30_000);
      expect(position).toEqual({ committed: '3', end: '3' });
    } finally {
      await c.stop();
    }
  });

  it('fromBeginning: false with a committed offset (3) below the log start (6): records 6-9 are applied, the reset is logged at warn and counted', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'offsets_range', partitions: 1 }])) as [string];
    await produceMessages(kafka, topic, Array.from({ length: 10 }, (_, i) => ({ key: 'k', value: entry(`range-${i}`), headers: { 'event-id': `range-${i}` } })));
    const group = uniqueName('g');
    await admin.setOffsets({ groupId: group, topic, partitions: [{ partition: 0, offset: '3' }] });
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '6' }] });
    const metrics = new RecordingMetrics();
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const c = consumer(topic, group, { fromBeginning: false, metrics, logger });
    await c.start();
    try {
      await waitFor(() => totals(s.db, s.schema), (t) => t['range-9']?.applied === 1, 30_000);
      const t = await totals(s.db, s.schema);
      expect([6, 7, 8, 9].map((i) => t[`range-${i}`])).toEqual(Array(4).fill({ total: 1, applied: 1 }));
      expect([0, 1, 2, 3, 4, 5].map((i) => t[`range-${i}`])).toEqual(Array(6).fill(undefined));
      const position = await waitFor(() => atEnd(group, topic), (x) => x.committed === x.end, 30_000);
      expect(position).toEqual({ committed: '10', end: '10' });
    } finally {
      await c.stop();
    }
    const resets = metrics.counters.filter((m) => m.name === 'offset_resets_total' && m.value > 0);
    expect(resets).toEqual([{ name: 'offset_resets_total', labels: { group, topic, partition: 0, reason: 'below-log-start' }, value: 1 }]);
    const warned = lines.filter((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.startsWith('offset reset'));
    expect(warned).toEqual([expect.objectContaining({ topic, partition: 0, committed: '3', logStart: '6', missing: '3', reason: 'below-log-start' })]);
  });

  it('fromBeginning: false governs only a group with no committed offset: it starts at the end, committed at once', async () => {
    const [topic] = (await createTopics(kafka, [{ prefix: 'offsets_fresh', partitions: 1 }])) as [string];
    await produceMessages(kafka, topic, [0, 1, 2].map((i) => ({ key: 'k', value: entry(`fresh-${i}`), headers: { 'event-id': `fresh-${i}` } })));
    const group = uniqueName('g');
    const c = consumer(topic, group, { fromBeginning: false });
    await c.start();
    try {
      await waitFor(() => committed(group, topic), (o) => o === '3', 30_000);
      await produceMessages(kafka, topic, [{ key: 'k', value: entry('fresh-3'), headers: { 'event-id': 'fresh-3' } }]);
      await waitFor(() => totals(s.db, s.schema), (t) => t['fresh-3']?.applied === 1, 30_000);
      const t = await totals(s.db, s.schema);
      expect([0, 1, 2, 3].map((i) => t[`fresh-${i}`]?.applied)).toEqual([undefined, undefined, undefined, 1]);
    } finally {
      await c.stop();
    }
  });
});
