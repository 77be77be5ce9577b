import { Writable } from 'node:stream';
import pino from 'pino';
import { childLogger, kafkajsLogCreator, type KafkajsLogEntry } from '../src';

/** A pino logger writing raw JSON lines into `lines`. */
function capture(bindings: Record<string, unknown> = {}): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
      done();
    },
  });
  return { logger: pino({ level: 'trace' }, sink).child(bindings), lines };
}

const levelOf = (line: string): number => (JSON.parse(line) as { level: number }).level;
const keyCount = (line: string, key: string): number => line.split(`"${key}":`).length - 1;

// What kafkajs 2.2.4 hands its logCreator (shapes from its network/connection.js, cluster/brokerPool.js,
// producer/sendMessages.js, consumer/index.js); the first was captured from a broker started a moment before.
const ERROR = 1;
const base = { timestamp: '2026-12-01T00:03:27.617Z', logger: 'kafkajs' };
const entries: Record<string, KafkajsLogEntry> = {
  coordinator: { level: ERROR, namespace: 'Connection', log: { ...base, message: 'Response GroupCoordinator(key: 10, version: 2)', broker: '127.0.0.1:45361', clientId: 'probe', error: 'The group coordinator is not available', correlationId: 2, size: 55 } },
  leader: { level: ERROR, namespace: 'Connection', log: { ...base, message: 'Response Metadata(key: 3, version: 6)', broker: '127.0.0.1:45361', clientId: 'probe', error: 'There is no leader for this topic-partition as we are in the middle of a leadership election', correlationId: 5, size: 90 } },
  seed: { level: ERROR, namespace: 'BrokerPool', log: { ...base, message: 'Failed to connect to seed broker, trying another broker from the list: Connection error: connect ECONNREFUSED 127.0.0.1:9', retryCount: 0, retryTime: 300 } },
  send: { level: ERROR, namespace: 'Producer', log: { ...base, message: 'Failed to send messages: This server is not the leader for that topic-partition', retryCount: 1, retryTime: 512 } },
  restart: { level: ERROR, namespace: 'Consumer', log: { ...base, message: 'Restarting the consumer in 300ms', retryCount: 5, retryTime: 300, groupId: 'g' } },
  crash: { level: ERROR, namespace: 'Consumer', log: { ...base, message: 'Crash: KafkaJSNumberOfRetriesExceeded: The group coordinator is not available', groupId: 'g', retryCount: 5, stack: 'KafkaJSNumberOfRetriesExceeded: …' } },
  listener: { level: ERROR, namespace: 'Consumer', log: { ...base, message: 'Failed to execute listener: boom', eventName: 'consumer.crash' } },
};

describe('kafkajs log lines through pino', () => {
  it('logs what kafkajs retries or hands back (coordinator or leader not available, retrier attempts) as warnings, and what it gives up on as errors', () => {
    const { logger, lines } = capture();
    const write = kafkajsLogCreator(logger)();
    for (const entry of Object.values(entries)) write(entry);
    const levels = Object.fromEntries(Object.keys(entries).map((name, i) => [name, levelOf(lines[i] as string)]));
    expect(levels).toEqual({ coordinator: 40, leader: 40, seed: 40, send: 40, restart: 40, crash: 50, listener: 50 });
    expect(JSON.parse(lines[0] as string)).toMatchObject({ component: 'kafkajs', error: 'The group coordinator is not available', msg: 'Response GroupCoordinator(key: 10, version: 2)' });
  });

  it('logs the idempotent producer warning about bounded retries (a setting the library chooses) at info, saying why; other warnings stay warnings', () => {
    const { logger, lines } = capture();
    const write = kafkajsLogCreator(logger)();
    write({ level: 2, namespace: 'Producer', log: { ...base, message: 'Limiting retries for the idempotent producer may invalidate EoS guarantees' } });
    write({ level: 2, namespace: 'Consumer', log: { ...base, message: 'Some other warning' } });
    expect(lines.map(levelOf)).toEqual([30, 40]);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ component: 'kafkajs', note: expect.stringContaining('event id') });
    expect(JSON.parse(lines[1] as string)).not.toHaveProperty('note');
  });

  it('never writes a key twice: not component under a logger that binds it, nor a kafkajs field the logger already binds', () => {
    const { logger, lines } = capture({ component: 'outbox-relay', clientId: 'mine' });
    kafkajsLogCreator(logger)()(entries.coordinator as KafkajsLogEntry);
    childLogger(logger, { component: 'other', schema: 's' }).info('a line');
    childLogger(childLogger(logger, { topic: 't' }), { topic: 't', offset: '1' }).info('another');
    for (const line of lines) {
      for (const key of ['component', 'clientId', 'topic', 'schema', 'offset']) expect(keyCount(line, key)).toBeLessThanOrEqual(1);
    }
    expect(JSON.parse(lines[0] as string)).toMatchObject({ component: 'outbox-relay', clientId: 'mine', broker: '127.0.0.1:45361' });
    expect(JSON.parse(lines[1] as string)).toMatchObject({ component: 'outbox-relay', schema: 's' });
  });
});
