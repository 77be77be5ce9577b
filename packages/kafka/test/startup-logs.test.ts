import { Writable } from 'node:stream';
import pino from 'pino';
import { createTestSchema, createTopics, produceMessages, startLocalBroker, testClient, testServices, uniqueName, type LocalKafkaBroker, type TestSchema } from '@effectively/testkit';
import { Kafka } from 'kafkajs';
import { IdempotentConsumer } from '../src';
import { waitFor } from './support/ledger';

describe('a consumer started with a broker that has just come up', () => {
  const { databaseUrl } = testServices();
  let broker: LocalKafkaBroker | undefined;
  let s: TestSchema | undefined;
  afterAll(async () => {
    await broker?.stop();
    await s?.drop();
  });

  it('logs nothing at error level while the cluster elects its group coordinator, and no line carries a key twice', async () => {
    [broker, s] = await Promise.all([startLocalBroker({ heap: '384m' }), createTestSchema(databaseUrl, 'startup_logs')]);
    const kafka = new Kafka({ brokers: broker.brokers, clientId: 'startup-logs', logLevel: 0 });
    const [topic] = (await createTopics(kafka, [{ prefix: 'startup_logs', partitions: 1 }])) as [string];
    await produceMessages(kafka, topic, [{ key: 'k', value: JSON.stringify({ n: 1 }), headers: { 'event-id': 'first' } }]);
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
        done();
      },
    });
    // An application logger that binds component itself.
    const logger = pino({ level: 'debug' }, sink).child({ component: 'orders-service' });
    const consumer = new IdempotentConsumer({ client: testClient(), brokers: broker.brokers, groupId: uniqueName('g'), topics: [topic], db: s.db, schema: s.schema, logger, handler: async () => {} });
    await consumer.start();
    try {
      await waitFor(async () => consumer.stats.processed, (n) => n === 1, 90_000);
    } finally {
      await consumer.stop();
    }
    expect(consumer.stats.processed).toBe(1);
    const errors = lines.filter((l) => (JSON.parse(l) as { level: number }).level >= 50);
    expect(errors).toEqual([]);
    for (const line of lines) {
      const repeated = ['component', 'group', 'topic', 'partition', 'offset', 'eventId', 'clientId'].filter((key) => line.split(`"${key}":`).length - 1 > 1);
      expect({ line, repeated }).toEqual({ line, repeated: [] });
    }
  });
});
