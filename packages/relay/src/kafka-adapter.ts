/**
 * The one place that talks to kafkajs. Everything else in this package sees only the small
 * {@link ProducerClient} interface, so a KafkaJS-compatible client can replace it here.
 */
import { Kafka, Partitioners, logLevel as KafkaLogLevel, type KafkaConfig, type ProducerConfig } from 'kafkajs';
import { kafkajsLogCreator, type Logger } from '@effectively/core';

/** One record to publish. */
export interface OutgoingMessage {
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

/** The records of one topic, in the order they must be appended (per key). */
export interface TopicBatch {
  topic: string;
  messages: OutgoingMessage[];
}

/**
 * What a failed send means for the rows in it:
 * - `message-too-large`: the broker refuses the record for its size; retrying cannot help.
 * - `unknown-topic`: the topic does not exist (or may not be written); every row of that topic fails alike.
 * - `unavailable`: the cluster, not the record, is the problem (connection lost, time-out, leader moving,
 *   producer state out of sync); retry the whole batch later without counting it against the rows.
 * - `retriable`: anything else; counted as a failed attempt of the row, retried with backoff.
 */
export type ProduceFailureKind = 'message-too-large' | 'unknown-topic' | 'unavailable' | 'retriable';

/** The producer-side seam. */
export interface ProducerClient {
  connect(): Promise<void>;
  /** Sends all batches with `acks: -1`; resolves only when every record is acknowledged. */
  sendBatch(batches: TopicBatch[]): Promise<void>;
  /** Says what an error thrown by {@link ProducerClient.sendBatch} means. */
  classify(error: unknown): ProduceFailureKind;
  disconnect(): Promise<void>;
}

/** kafkajs producer settings a caller may pass; idempotence and one request in flight are forced. */
export type ProducerSettings = Omit<ProducerConfig, 'createPartitioner' | 'transactionalId' | 'transactionTimeout'>;

/** Extra kafkajs client settings (ssl, sasl, connection time-outs, …). */
export type KafkaSettings = Omit<KafkaConfig, 'brokers' | 'clientId' | 'logCreator' | 'logLevel'>;

/** What the relay hands to a {@link ProducerClient} factory. */
export interface ProducerClientSettings {
  brokers: string[];
  clientId: string;
  logger: Logger;
  kafka: KafkaSettings | undefined;
  producer: ProducerSettings;
}

const TOPIC_TYPES = new Set(['UNKNOWN_TOPIC_OR_PARTITION', 'TOPIC_AUTHORIZATION_FAILED', 'INVALID_TOPIC_EXCEPTION']);
const UNAVAILABLE_TYPES = new Set([
  'OUT_OF_ORDER_SEQUENCE_NUMBER', 'INVALID_PRODUCER_EPOCH', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_ID_MAPPING', 'DUPLICATE_SEQUENCE_NUMBER',
  'LEADER_NOT_AVAILABLE', 'NOT_LEADER_FOR_PARTITION', 'NOT_LEADER_OR_FOLLOWER', 'REQUEST_TIMED_OUT', 'NETWORK_EXCEPTION', 'BROKER_NOT_AVAILABLE',
  'NOT_ENOUGH_REPLICAS', 'NOT_ENOUGH_REPLICAS_AFTER_APPEND', 'KAFKA_STORAGE_ERROR', 'COORDINATOR_NOT_AVAILABLE', 'CLUSTER_AUTHORIZATION_FAILED',
]);
const UNAVAILABLE_NAMES = new Set([
  'KafkaJSConnectionError', 'KafkaJSConnectionClosedError', 'KafkaJSRequestTimeoutError', 'KafkaJSBrokerNotFound', 'KafkaJSMetadataNotLoaded',
  'KafkaJSLockTimeout', 'KafkaJSTimeout', 'KafkaJSNotImplemented',
]);

/** The kafkajs error `type`s and `name`s in an error and what it wraps (retries, aggregates). */
function errorTraits(error: unknown): { types: Set<string>; names: Set<string> } {
  const types = new Set<string>();
  const names = new Set<string>();
  const queue: unknown[] = [error];
  for (let seen = 0; queue.length > 0 && seen < 20; seen++) {
    const current = queue.shift();
    if (typeof current !== 'object' || current === null) continue;
    const e = current as { type?: unknown; name?: unknown; cause?: unknown; originalError?: unknown; errors?: unknown };
    if (typeof e.type === 'string') types.add(e.type);
    if (typeof e.name === 'string') names.add(e.name);
    queue.push(e.originalError, e.cause);
    if (Array.isArray(e.errors)) queue.push(...(e.errors as unknown[]));
  }
  return { types, names };
}

/** Classifies a kafkajs produce error. */
export function classifyKafkajsError(error: unknown): ProduceFailureKind {
  const { types, names } = errorTraits(error);
  if (types.has('MESSAGE_TOO_LARGE') || types.has('RECORD_LIST_TOO_LARGE')) return 'message-too-large';
  if ([...types].some((t) => TOPIC_TYPES.has(t))) return 'unknown-topic';
  if ([...types].some((t) => UNAVAILABLE_TYPES.has(t)) || [...names].some((n) => UNAVAILABLE_NAMES.has(n))) return 'unavailable';
  return 'retriable';
}

/** Creates the kafkajs-backed {@link ProducerClient}: idempotent, one request in flight, `acks: -1`, no topic auto-creation. */
export function createKafkajsProducer(settings: ProducerClientSettings): ProducerClient {
  const kafka = new Kafka({ ...settings.kafka, brokers: settings.brokers, clientId: settings.clientId, logLevel: KafkaLogLevel.INFO, logCreator: kafkajsLogCreator(settings.logger) });
  const producer = kafka.producer({
    allowAutoTopicCreation: false,
    ...settings.producer,
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  return {
    connect: () => producer.connect(),
    sendBatch: async (batches) => {
      await producer.sendBatch({ acks: -1, topicMessages: batches.map((b) => ({ topic: b.topic, messages: b.messages })) });
    },
    classify: classifyKafkajsError,
    disconnect: () => producer.disconnect(),
  };
}
