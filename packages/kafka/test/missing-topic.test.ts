import { TopicNotFoundError } from '@effectively/core';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { IdempotentConsumer } from '../src';

/** start() with a subscribed topic the cluster does not have: a typed error naming it, nothing left open. */
describe('start() with a topic that does not exist', () => {
  const { brokers, databaseUrl } = testServices();
  let s: TestSchema;
  let topic: string;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'missing_topic');
    [topic] = (await createTopics(testKafka(brokers), [{ prefix: 'missing_topic', partitions: 1 }])) as [string];
  });
  afterAll(async () => s.drop());

  it('rejects with TopicNotFoundError naming only the missing topics, resolves `stopped`, and a consumer started once the topic exists consumes', async () => {
    const missing = [uniqueName('missing_a'), uniqueName('missing_b')];
    const groupId = uniqueName('g');
    const applied: string[] = [];
    const consumerFor = (topics: string[]): IdempotentConsumer =>
      new IdempotentConsumer({ client: testClient(), brokers, groupId, topics, db: s.db, schema: s.schema, fromBeginning: true, handler: async (event) => void applied.push(event.id) });

    const consumer = consumerFor([topic, ...missing]);
    const error = await consumer.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(TopicNotFoundError);
    expect((error as TopicNotFoundError).code).toBe('TOPIC_NOT_FOUND');
    expect((error as TopicNotFoundError).topics).toEqual(missing);
    expect((error as Error).message).toContain(`Topics "${missing[0]}", "${missing[1]}" do not exist on the cluster. Create them`);
    await expect(consumer.stopped).resolves.toEqual({ signal: undefined });
    await consumer.stop(); // a no-op after a failed start
    // Nothing was claimed or committed for the group.
    const claimed = await s.db.selectFrom(`${s.schema}.processed_events` as never).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    expect(Number((claimed as { n: unknown }).n)).toBe(0);

    const [extra] = (await createTopics(testKafka(brokers), [{ prefix: 'missing_topic_created', partitions: 1 }])) as [string];
    await produceMessages(testKafka(brokers), extra, [{ key: 'k', value: '{}', headers: { 'event-id': 'e-1' } }]);
    const next = consumerFor([topic, extra]);
    await next.start();
    try {
      for (let i = 0; i < 600 && applied.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      expect(applied).toEqual(['e-1']);
    } finally {
      await next.stop();
    }
  });
});
