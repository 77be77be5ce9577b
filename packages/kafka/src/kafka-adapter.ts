/**
 * The one place that talks to kafkajs. kafkajs is in maintenance mode; everything else in this
 * package sees only these small interfaces, so a KafkaJS-compatible client can replace it here.
 */
import { randomUUID } from 'node:crypto';
import { ConfigResourceTypes, Kafka, logLevel as KafkaLogLevel, type Consumer, type KafkaConfig } from 'kafkajs';
import { kafkajsLogCreator, type Logger } from '@effectively/core';
import type { PlatformaticClientOptions } from './platformatic-options';

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
  /**
   * The offset of the last record this fetch covered, control records (transaction markers) and
   * records of aborted transactions included, which are not in `messages`. Once every message is
   * settled, everything up to it is done. Optional: without it the commit stops at the last message.
   */
  lastOffset?: string;
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

/** Where a partition stands for the group. Offsets are decimal strings. */
export interface PartitionPosition {
  partition: number;
  /** The group's committed offset, or null when it has none. */
  committed: string | null;
  /** The earliest offset still in the log. */
  logStart: string;
  /** The offset the next record will get. */
  highWatermark: string;
}

/** A fetch that held no record for the handler (only transaction markers or aborted records): its last offset. */
export interface SkippedRange {
  topic: string;
  partition: number;
  lastOffset: string;
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
  /**
   * Fetches that held no record for the handler (so `run`'s `onBatch` never saw them). Without
   * it, offsets stop short of the high watermark on transactional topics.
   */
  onSkippedRange?(listener: (range: SkippedRange) => void): void;
  /** The client reset a partition's position by itself (an offset out of range while fetching). */
  onOffsetReset?(listener: (at: { topic: string; partition: number }) => void): void;
  /**
   * The group's committed offsets and the log's bounds for `partitions` of `topic` (all when
   * omitted). With `seek`, it lets the consumer decide where partitions start (see the README);
   * a client without them leaves that to itself.
   */
  positions?(topic: string, partitions?: number[]): Promise<PartitionPosition[]>;
  /**
   * Optional: which of `topics` the cluster does not have. Without it, a missing topic surfaces
   * as whatever `subscribe` throws.
   */
  missingTopics?(topics: string[]): Promise<string[]>;
  /** Moves the fetch position of an assigned partition to `offset` (commits nothing). */
  seek?(topic: string, partition: number, offset: string): void;
  stop(): Promise<void>;
  disconnect(): Promise<void>;
  /**
   * Optional: each topic's `retention.ms` (`-1`, unlimited, as `Infinity`), for the
   * `consumer_topic_retention_seconds` metric; a client without it reports nothing.
   */
  topicRetentionMs?(topics: string[]): Promise<Map<string, number>>;
}

/** The client settings the consumer passes on. Auto-commit and auto-resolve are not among them: they are always off. */
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
  /** Extra @platformatic/kafka client settings (tls, sasl, …), for `client: 'platformatic'`. */
  platformatic?: PlatformaticClientOptions | undefined;
}

/** Creates the kafkajs-backed {@link ConsumerClient}. */
export function createKafkajsConsumer(settings: KafkaClientSettings): ConsumerClient {
  const resetListeners: Array<(at: { topic: string; partition: number }) => void> = [];
  // kafkajs resets an out-of-range position by itself and only logs it: that log line is the signal.
  const logCreator: typeof kafkajsLogCreator = (logger) => () => {
    const log = kafkajsLogCreator(logger)();
    return (entry) => {
      const { message, topic, partition } = entry.log as { message?: unknown; topic?: unknown; partition?: unknown };
      if (typeof message === 'string' && message.startsWith('Offset out of range, resetting') && typeof topic === 'string' && typeof partition === 'number') {
        for (const listener of resetListeners) listener({ topic, partition });
      }
      log(entry);
    };
  };
  const kafka = new Kafka({ ...settings.kafka, brokers: settings.brokers, clientId: settings.clientId, logLevel: KafkaLogLevel.INFO, logCreator: logCreator(settings.logger) });
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
            lastOffset: batch.lastOffset(),
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
    onSkippedRange: (listener) => {
      // kafkajs resolves such fetches itself but, with auto-commit off, never commits them.
      consumer.on(consumer.events.END_BATCH_PROCESS, (event) => {
        if (event.payload.batchSize === 0) listener({ topic: event.payload.topic, partition: event.payload.partition, lastOffset: event.payload.lastOffset });
      });
    },
    onOffsetReset: (listener) => {
      resetListeners.push(listener);
    },
    positions: async (topic, partitions) => {
      const admin = kafka.admin();
      await admin.connect();
      try {
        const [committed, bounds] = await Promise.all([admin.fetchOffsets({ groupId: settings.groupId, topics: [topic] }), admin.fetchTopicOffsets(topic)]);
        const committedOf = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, p.offset]));
        return (partitions ?? bounds.map((b) => b.partition)).map((partition) => {
          const b = bounds.find((x) => x.partition === partition);
          const c = committedOf.get(partition);
          const logStart = b?.low ?? '0';
          // kafkajs reports "none" as -1; -2 is what kafkajs commits after resetting to the earliest offset: that position.
          return { partition, committed: c === '-2' ? logStart : c === undefined || c.startsWith('-') ? null : c, logStart, highWatermark: b?.high ?? '0' };
        });
      } finally {
        await admin.disconnect();
      }
    },
    missingTopics: async (topics) => {
      const admin = kafka.admin();
      await admin.connect();
      try {
        const existing = new Set(await admin.listTopics());
        return topics.filter((t) => !existing.has(t));
      } finally {
        await admin.disconnect();
      }
    },
    seek: (topic, partition, offset) => consumer.seek({ topic, partition, offset }),
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

/** What {@link readTopicToEnd} needs to reach the cluster. */
export interface TopicReaderSettings {
  brokers: string[];
  clientId?: string;
  logger: Logger;
  kafka?: KafkaClientSettings['kafka'];
  /** Give up after this long; default 60 s. */
  timeoutMs?: number;
}

/** The topics the cluster has (read through a short-lived admin client). */
export async function clusterTopics(settings: TopicReaderSettings): Promise<string[]> {
  const kafka = new Kafka({ ...settings.kafka, brokers: settings.brokers, clientId: settings.clientId ?? 'effectively-dlq', logLevel: KafkaLogLevel.INFO, logCreator: kafkajsLogCreator(settings.logger) });
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await admin.listTopics();
  } finally {
    await admin.disconnect();
  }
}

/**
 * Every record of `topic` from the earliest offset to the end offsets as they are when called,
 * read with a throw-away consumer group that commits nothing. Sorted by partition and offset.
 */
export async function readTopicToEnd(settings: TopicReaderSettings, topic: string): Promise<RawMessage[]> {
  const kafka = new Kafka({ ...settings.kafka, brokers: settings.brokers, clientId: settings.clientId ?? 'effectively-dlq', logLevel: KafkaLogLevel.INFO, logCreator: kafkajsLogCreator(settings.logger) });
  const admin = kafka.admin();
  await admin.connect();
  let ends: Array<{ partition: number; high: string; low: string }>;
  try {
    ends = await admin.fetchTopicOffsets(topic);
  } finally {
    await admin.disconnect();
  }
  const remaining = new Map(ends.filter((p) => BigInt(p.high) > BigInt(p.low)).map((p) => [p.partition, BigInt(p.high)]));
  const out: RawMessage[] = [];
  if (remaining.size === 0) return out;
  const consumer = kafka.consumer({ groupId: `effectively-read-${randomUUID()}`, sessionTimeout: 10_000, heartbeatInterval: 1_000, allowAutoTopicCreation: false });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timeoutMs = settings.timeoutMs ?? 60_000;
      const timer = setTimeout(() => reject(new Error(`Reading ${topic} timed out after ${timeoutMs} ms with ${remaining.size} partitions unread.`)), timeoutMs);
      consumer
        .run({
          autoCommit: false,
          eachBatchAutoResolve: true,
          eachBatch: async ({ batch }) => {
            for (const m of batch.messages) {
              out.push({ topic, partition: batch.partition, offset: m.offset, key: m.key ?? null, value: m.value ?? null, headers: (m.headers ?? {}) as RawMessage['headers'], timestamp: m.timestamp });
            }
            const end = remaining.get(batch.partition);
            if (end !== undefined && BigInt(batch.lastOffset()) + 1n >= end) remaining.delete(batch.partition);
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
