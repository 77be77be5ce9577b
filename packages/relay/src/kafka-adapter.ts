/**
 * The one place that talks to kafkajs. Everything else in this package sees only the small
 * {@link ProducerClient} interface, so a KafkaJS-compatible client can replace it here.
 */
import { Kafka, Partitioners, logLevel as KafkaLogLevel, type Admin, type KafkaConfig, type ProducerConfig } from 'kafkajs';
import { kafkajsLogCreator, type Logger, type PlatformaticClientOptions } from '@effectively/core';

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
 * - `unknown-topic`: the topic does not exist or its name is invalid; every row of that topic fails alike.
 * - `not-authorized`: the relay may not write the topic (ACL); every row of that topic fails alike.
 * - `message-too-large`: the broker refuses the record for its size; retrying cannot help.
 * - `invalid-record`: the broker refuses the record itself (corrupt, bad timestamp, failed validation).
 * - `unavailable`: the cluster or a partition, not the record, is the problem (connection lost, time-out,
 *   no leader, producer state out of sync); never counted towards parking a row.
 * - `retriable`: anything else; counted as a failed attempt of the row, retried with backoff.
 */
export type ProduceFailureKind = 'unknown-topic' | 'not-authorized' | 'message-too-large' | 'invalid-record' | 'unavailable' | 'retriable';

/** Kinds that fail every row of a topic alike (found before any record is appended). */
export const TOPIC_FAILURES: ReadonlySet<ProduceFailureKind> = new Set<ProduceFailureKind>(['unknown-topic', 'not-authorized']);

/** Kinds Kafka reports as permanent for the record or topic: retrying soon cannot help. */
export const PERMANENT_FAILURES: ReadonlySet<ProduceFailureKind> = new Set<ProduceFailureKind>(['unknown-topic', 'not-authorized', 'message-too-large', 'invalid-record']);

/** The producer-side seam: {@link createKafkajsProducer}, `createPlatformaticProducer`, or your own. */
export interface ProducerClient {
  connect(): Promise<void>;
  /** Sends all batches with `acks: -1`; resolves only when every record is acknowledged. */
  sendBatch(batches: TopicBatch[]): Promise<void>;
  /** Says what an error thrown by {@link ProducerClient.sendBatch} means. */
  classify(error: unknown): ProduceFailureKind;
  /**
   * One cheap round trip to the cluster (a metadata request); resolves when Kafka answered. The
   * relay calls it when idle to keep its health honest; without it an idle relay's health rests
   * on its last send or connection.
   */
  ping?(): Promise<void>;
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
  /** kafkajs client settings (for the kafkajs client). */
  kafka: KafkaSettings | undefined;
  /** kafkajs producer settings (for the kafkajs client). */
  producer: ProducerSettings;
  /** @platformatic/kafka connection settings (for the platformatic client); the relay's defaults filled in. */
  platformatic: PlatformaticClientOptions;
}

const UNKNOWN_TOPIC_TYPES = new Set(['UNKNOWN_TOPIC_OR_PARTITION', 'INVALID_TOPIC_EXCEPTION']);
const TOO_LARGE_TYPES = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE']);
const INVALID_RECORD_TYPES = new Set(['CORRUPT_MESSAGE', 'INVALID_TIMESTAMP', 'INVALID_RECORD', 'UNSUPPORTED_COMPRESSION_TYPE', 'UNSUPPORTED_FOR_MESSAGE_FORMAT']);
const UNAVAILABLE_TYPES = new Set([
  'OUT_OF_ORDER_SEQUENCE_NUMBER', 'INVALID_PRODUCER_EPOCH', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_ID_MAPPING', 'DUPLICATE_SEQUENCE_NUMBER',
  'LEADER_NOT_AVAILABLE', 'NOT_LEADER_FOR_PARTITION', 'NOT_LEADER_OR_FOLLOWER', 'REQUEST_TIMED_OUT', 'NETWORK_EXCEPTION', 'BROKER_NOT_AVAILABLE',
  'NOT_ENOUGH_REPLICAS', 'NOT_ENOUGH_REPLICAS_AFTER_APPEND', 'KAFKA_STORAGE_ERROR', 'COORDINATOR_NOT_AVAILABLE', 'CLUSTER_AUTHORIZATION_FAILED',
  'FENCED_LEADER_EPOCH', 'UNKNOWN_LEADER_EPOCH', 'THROTTLING_QUOTA_EXCEEDED',
]);
const UNAVAILABLE_NAMES = new Set([
  'KafkaJSConnectionError', 'KafkaJSConnectionClosedError', 'KafkaJSRequestTimeoutError', 'KafkaJSBrokerNotFound', 'KafkaJSMetadataNotLoaded',
  'KafkaJSLockTimeout', 'KafkaJSTimeout', 'KafkaJSNotImplemented', 'KafkaJSNoBrokerAvailableError', 'KafkaSendTimeout',
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

/**
 * What a failed send means, from the Kafka error types it carries (`UNKNOWN_TOPIC_OR_PARTITION`,
 * …, the protocol's names, as every client reports them) and whether the client itself reported a
 * lost connection or a time-out. Permanent kinds win over transient ones. Shared by the clients.
 */
export function classifyKafkaErrorTypes(types: ReadonlySet<string>, transportFailed: boolean): ProduceFailureKind {
  const any = (set: ReadonlySet<string>): boolean => [...types].some((t) => set.has(t));
  if (types.has('TOPIC_AUTHORIZATION_FAILED')) return 'not-authorized';
  if (any(UNKNOWN_TOPIC_TYPES)) return 'unknown-topic';
  if (any(TOO_LARGE_TYPES)) return 'message-too-large';
  if (any(INVALID_RECORD_TYPES)) return 'invalid-record';
  if (any(UNAVAILABLE_TYPES) || transportFailed) return 'unavailable';
  return 'retriable';
}

/**
 * Classifies a kafkajs produce error by the Kafka error types (and kafkajs error names) it
 * carries, unwrapping retries and aggregates. Permanent kinds win over transient ones.
 */
export function classifyKafkajsError(error: unknown): ProduceFailureKind {
  const { types, names } = errorTraits(error);
  return classifyKafkaErrorTypes(types, [...names].some((n) => UNAVAILABLE_NAMES.has(n)));
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
  let admin: Admin | undefined;
  return {
    connect: () => producer.connect(),
    sendBatch: async (batches) => {
      await producer.sendBatch({ acks: -1, topicMessages: batches.map((b) => ({ topic: b.topic, messages: b.messages })) });
    },
    classify: classifyKafkajsError,
    ping: async () => {
      const client = (admin ??= kafka.admin());
      try {
        await client.connect();
        await client.describeCluster();
      } catch (err) {
        admin = undefined;
        await client.disconnect().catch(() => undefined);
        throw err;
      }
    },
    disconnect: async () => {
      const client = admin;
      admin = undefined;
      await Promise.all([producer.disconnect(), client?.disconnect()]);
    },
  };
}
