import { Kafka, logLevel, type IHeaders, type Producer } from 'kafkajs';
import { uniqueName } from '../random';

/** A message to produce: value and key as strings or buffers (null value = tombstone). */
export interface TestMessage {
  key?: string | Buffer | null;
  value: string | Buffer | null;
  headers?: IHeaders;
  partition?: number;
}

/** A message read back from a topic. */
export interface ReadMessage {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: IHeaders;
}

/** A kafkajs client for tests: quiet logs, short retries. */
export function testKafka(brokers: string[], clientId = 'effectively-test'): Kafka {
  return new Kafka({ clientId, brokers, logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 100 } });
}

/** Creates topics with unique names (prefix + random suffix) and waits until they have leaders. */
export async function createTopics(kafka: Kafka, specs: Array<{ prefix: string; partitions?: number; config?: Record<string, string> }>): Promise<string[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const names = specs.map((s) => uniqueName(s.prefix));
    await admin.createTopics({
      // kafkajs' own leader wait can fail with UNKNOWN_TOPIC_OR_PARTITION on a broker that just
      // started; poll the metadata instead until every partition has a leader.
      waitForLeaders: false,
      topics: specs.map((s, i) => ({
        topic: names[i] as string,
        numPartitions: s.partitions ?? 1,
        replicationFactor: 1,
        configEntries: Object.entries(s.config ?? {}).map(([name, value]) => ({ name, value })),
      })),
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ready = await admin
        .fetchTopicMetadata({ topics: names })
        .then((m) => m.topics.length === names.length && m.topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0)))
        .catch(() => false);
      if (ready) return names;
      if (Date.now() > deadline) throw new Error(`topics ${names.join(', ')} got no leaders within 30 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await admin.disconnect();
  }
}

/** Options for {@link produceMessages}. */
export interface ProduceOptions {
  /** Share of messages sent more than once, 0..1; default 0. */
  duplicateRate?: number;
  /** Copies of a duplicated message, at least 2; default 2 (or 2–3 chosen at random when `maxCopies` is 3). */
  maxCopies?: number;
  /** Random source for which messages are duplicated; default Math.random. */
  random?: () => number;
  /** Send duplicates right after their original (true) or shuffled later in the stream (false); default false. */
  adjacent?: boolean;
  /** Messages per produce request; default 500. */
  chunkSize?: number;
}

/**
 * Produces `messages`, sending a chosen share of them two or more times, as retrying
 * producers do. Returns the stream as actually sent (originals and copies, in order).
 */
export async function produceMessages(kafka: Kafka | Producer, topic: string, messages: TestMessage[], options: ProduceOptions = {}): Promise<TestMessage[]> {
  const random = options.random ?? Math.random;
  const rate = options.duplicateRate ?? 0;
  const max = Math.max(2, options.maxCopies ?? 2);
  let stream: TestMessage[] = [];
  const late: TestMessage[] = [];
  for (const message of messages) {
    stream.push(message);
    if (random() < rate) {
      const copies = 1 + Math.floor(random() * (max - 1));
      for (let c = 0; c < copies; c++) (options.adjacent ? stream : late).push(message);
    }
  }
  // Spread late copies through the rest of the stream.
  for (const copy of late) {
    const at = Math.floor(stream.indexOf(copy) + 1 + random() * (stream.length - stream.indexOf(copy)));
    stream = [...stream.slice(0, at), copy, ...stream.slice(at)];
  }
  const producer = 'producer' in kafka ? kafka.producer() : kafka;
  const own = producer !== kafka;
  if (own) await producer.connect();
  try {
    const size = options.chunkSize ?? 500;
    for (let i = 0; i < stream.length; i += size) {
      await producer.send({ topic, acks: -1, messages: stream.slice(i, i + size) });
    }
  } finally {
    if (own) await producer.disconnect();
  }
  return stream;
}

/**
 * Reads every message of `topic` from the beginning up to the end offsets as they are when
 * called, with a throw-away consumer group. Resolves when all partitions are read.
 */
export async function readTopic(kafka: Kafka, topic: string, options: { timeoutMs?: number } = {}): Promise<ReadMessage[]> {
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const remaining = new Map(ends.filter((p) => BigInt(p.high) > BigInt(p.low)).map((p) => [p.partition, BigInt(p.high)]));
  const out: ReadMessage[] = [];
  if (remaining.size === 0) return out;
  const consumer = kafka.consumer({ groupId: uniqueName('read'), sessionTimeout: 10_000, heartbeatInterval: 1000 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`readTopic(${topic}) timed out with ${remaining.size} partitions unread`)), options.timeoutMs ?? 60_000);
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ topic: t, partition, message }) => {
            out.push({ topic: t, partition, offset: message.offset, key: message.key, value: message.value, headers: message.headers ?? {} });
            const end = remaining.get(partition);
            if (end !== undefined && BigInt(message.offset) + 1n >= end) remaining.delete(partition);
            if (remaining.size === 0) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return out.sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
}
