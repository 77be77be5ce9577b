/**
 * The one place that talks to kafkajs. kafkajs is in maintenance mode; everything else in this
 * package sees only these small interfaces, so a KafkaJS-compatible client can replace it here.
 */
import { ConfigResourceTypes, Kafka, logLevel as KafkaLogLevel, type Consumer, type KafkaConfig } from 'kafkajs';
import { kafkajsLogCreator, type Logger } from '@effectively/core';

/** A record as fetched from Kafka. */
export interface RawMessage {
  topic: string;
  partition: number;
  /** The record's offset, as kafkajs gives it (a decimal string). */
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, Buffer | string | Array<Buffer | string> | undefined>;
  timestamp: string;
}

/** A fetched batch of one partition, with the controls the processor needs. */
export interface FetchedBatch {
  topic: string;
  partition: number;
  messages: RawMessage[];
  /** The partition's high watermark at fetch time (offset of the next record to be written), if the client reports it. */
  highWatermark?: string;
  /** Marks an offset as consumed locally (so it is not fetched again); not a commit. */
  resolveOffset(offset: string): void;
  heartbeat(): Promise<void>;
  /** False once the consumer is stopping. */
  isRunning(): boolean;
  /** True once a rebalance revoked or reassigned this partition. */
  isStale(): boolean;
}

/** Group membership after a (re)join. */
export interface Assignment {
  memberId: string;
  partitions: Array<{ topic: string; partition: number }>;
}

/** The consumer-side seam. */
export interface ConsumerClient {
  connect(): Promise<void>;
  subscribe(topics: string[], fromBeginning: boolean): Promise<void>;
  /** Starts fetching; `onBatch` runs for each fetched partition batch. */
  run(onBatch: (batch: FetchedBatch) => Promise<void>, partitionsConsumedConcurrently: number): Promise<void>;
  commit(offsets: Array<{ topic: string; partition: number; offset: string }>): Promise<void>;
  pause(topic: string, partition: number): void;
  resume(topic: string, partition: number): void;
  onAssignment(listener: (assignment: Assignment) => void): void;
  onCrash(listener: (error: Error, willRestart: boolean) => void): void;
  stop(): Promise<void>;
  disconnect(): Promise<void>;
  /**
   * Optional: each topic's `retention.ms` (`-1`, unlimited, as `Infinity`), for the
   * `consumer_topic_retention_seconds` metric; a client without it reports nothing.
   */
  topicRetentionMs?(topics: string[]): Promise<Map<string, number>>;
}

/** The kafkajs settings the consumer passes on. Auto-commit and auto-resolve are not among them: they are always off. */
export interface KafkaClientSettings {
  brokers: string[];
  clientId: string;
  groupId: string;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  rebalanceTimeoutMs: number;
  maxBytesPerPartition: number;
  /** Longest wait of a fetch at the broker (kafkajs `maxWaitTimeInMs`). */
  maxWaitTimeMs?: number;
  logger: Logger;
  /** Extra kafkajs client settings (ssl, sasl, …). */
  kafka?: Omit<KafkaConfig, 'brokers' | 'clientId' | 'logCreator' | 'logLevel'> | undefined;
}

/** Creates the kafkajs-backed {@link ConsumerClient}. */
export function createKafkajsConsumer(settings: KafkaClientSettings): ConsumerClient {
  const kafka = new Kafka({ ...settings.kafka, brokers: settings.brokers, clientId: settings.clientId, logLevel: KafkaLogLevel.INFO, logCreator: kafkajsLogCreator(settings.logger) });
  const consumer: Consumer = kafka.consumer({
    groupId: settings.groupId,
    sessionTimeout: settings.sessionTimeoutMs,
    heartbeatInterval: settings.heartbeatIntervalMs,
    rebalanceTimeout: settings.rebalanceTimeoutMs,
    maxBytesPerPartition: settings.maxBytesPerPartition,
    ...(settings.maxWaitTimeMs === undefined ? {} : { maxWaitTimeInMs: settings.maxWaitTimeMs }),
    allowAutoTopicCreation: false,
    retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 300, maxRetryTime: 10_000 },
  });
  return {
    connect: () => consumer.connect(),
    subscribe: (topics, fromBeginning) => consumer.subscribe({ topics, fromBeginning }),
    run: (onBatch, partitionsConsumedConcurrently) =>
      consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently,
        eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
          await onBatch({
            topic: batch.topic,
            partition: batch.partition,
            messages: batch.messages.map((m) => ({
              topic: batch.topic,
              partition: batch.partition,
              offset: m.offset,
              key: m.key ?? null,
              value: m.value ?? null,
              headers: (m.headers ?? {}) as RawMessage['headers'],
              timestamp: m.timestamp,
            })),
            highWatermark: batch.highWatermark,
            resolveOffset,
            heartbeat,
            isRunning,
            isStale,
          });
        },
      }),
    commit: (offsets) => consumer.commitOffsets(offsets),
    pause: (topic, partition) => consumer.pause([{ topic, partitions: [partition] }]),
    resume: (topic, partition) => consumer.resume([{ topic, partitions: [partition] }]),
    onAssignment: (listener) => {
      consumer.on(consumer.events.GROUP_JOIN, (event) => {
        const assignment = event.payload.memberAssignment as Record<string, number[]>;
        listener({
          memberId: event.payload.memberId,
          partitions: Object.entries(assignment).flatMap(([topic, partitions]) => partitions.map((partition) => ({ topic, partition }))),
        });
      });
    },
    onCrash: (listener) => {
      consumer.on(consumer.events.CRASH, (event) => listener(event.payload.error, event.payload.restart));
    },
    stop: () => consumer.stop(),
    disconnect: () => consumer.disconnect(),
    topicRetentionMs: async (topics) => {
      const admin = kafka.admin();
      await admin.connect();
      try {
        const described = await admin.describeConfigs({
          includeSynonyms: false,
          resources: topics.map((name) => ({ type: ConfigResourceTypes.TOPIC, name, configNames: ['retention.ms'] })),
        });
        const out = new Map<string, number>();
        for (const r of described.resources) {
          const value = r.configEntries.find((e) => e.configName === 'retention.ms')?.configValue;
          if (value !== undefined && /^-?\d+$/.test(value)) out.set(r.resourceName, Number(value) < 0 ? Number.POSITIVE_INFINITY : Number(value));
        }
        return out;
      } finally {
        await admin.disconnect();
      }
    },
  };
}
