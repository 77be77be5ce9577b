import { Writable } from 'node:stream';
import pino from 'pino';
import { createTestSchema, testKafka, testServices } from '@effectively/testkit';
import { OutboxRelay } from '../src';
import { enqueue, makeMessages, newTopic, waitFor } from './support/outbox';

describe('relay log lines', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);

  it('carry each key once: the relay\'s own lines component "outbox-relay", its kafkajs producer\'s lines component "kafkajs"', async () => {
    const s = await createTestSchema(databaseUrl, 'relay_logs');
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
        done();
      },
    });
    const relay = new OutboxRelay({ brokers, db: s.db, listen: false, schema: s.schema, pollIntervalMs: 50, logger: pino({ level: 'debug' }, sink) });
    try {
      const topic = await newTopic(kafka, 'relay_logs');
      await enqueue(s.db, s.schema, makeMessages(topic, 2, 2, 'l'));
      await relay.start();
      await waitFor(() => relay.stats.published, (n) => n === 2, 60_000, 'two rows published');
    } finally {
      await relay.stop();
      await s.drop();
    }
    const components = new Set<string>();
    for (const line of lines) {
      // pino writes a key once per binding: a child binding a key its parent has repeats it.
      const repeated = ['component', 'schema', 'relayId', 'clientId'].filter((key) => line.split(`"${key}":`).length - 1 > 1);
      expect({ line, repeated }).toEqual({ line, repeated: [] });
      components.add(String((JSON.parse(line) as { component?: unknown }).component));
    }
    expect([...components].sort()).toEqual(['kafkajs', 'outbox-relay']);
  });
});
