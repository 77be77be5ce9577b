import { nodeVersionAtLeast, OptionalPeerError, PLATFORMATIC_KAFKA } from '@effectively/core';
import { createTestSchema, createTopics, produceMessages, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';
import { count } from './support/ledger';

/**
 * `client: 'platformatic'` on a Node.js @platformatic/kafka does not run on (this suite's kafkajs
 * run, Node 20): start() rejects with the typed error saying what to do, before anything is
 * written or joined, and never loads the package. Under Node 22 the client loads (the other files).
 */
const tooOld = !nodeVersionAtLeast(PLATFORMATIC_KAFKA.minNode ?? '0.0.0');

describe('client: platformatic on a Node.js too old for it', () => {
  const { brokers, databaseUrl } = testServices();
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'plat_old');
  });
  afterAll(async () => s.drop());

  (tooOld ? it : it.skip)('start() rejects with OptionalPeerError (node-version) before anything is written; stopped resolves', async () => {
    const kafka = testKafka(brokers);
    const [topic] = await createTopics(kafka, [{ prefix: 'plat_old', partitions: 1 }]);
    await produceMessages(kafka, topic as string, [{ key: 'k', value: '{}', headers: { 'event-id': 'e1' } }]);
    const groupId = uniqueName('g');
    const consumer = new IdempotentConsumer({ brokers, groupId, topics: [topic as string], db: s.db, schema: s.schema, handler: async () => undefined, client: 'platformatic' });
    const error = await consumer.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OptionalPeerError);
    expect((error as OptionalPeerError).reason).toBe('node-version');
    expect((error as Error).message).toMatch(/client: 'platformatic' needs Node\.js ≥ 22\.22\.0/);
    expect((error as Error).message).toMatch(/client: 'kafkajs'/);
    await expect(consumer.stopped).resolves.toEqual({ signal: undefined });
    expect(await count(s.db, s.schema, 'processed_events')).toBe(0);
    expect(await count(s.db, s.schema, 'partition_fences')).toBe(0);
    const admin = kafka.admin();
    await admin.connect();
    try {
      const groups = (await admin.listGroups()).groups.map((g) => g.groupId);
      expect(groups).not.toContain(groupId);
    } finally {
      await admin.disconnect();
    }
  });
});
