/**
 * The {@link ConsumerClient} on @platformatic/kafka (maintained, pure TypeScript, Node.js >=
 * 22.22), chosen with `client: 'platformatic'`. The client's group membership (join, sync,
 * heartbeats in the background, rejoin on a rebalance) is used as it is; fetching is this
 * package's own loop ({@link Fetcher}), since the client's stream cannot pause one partition.
 * The module is loaded by `connect()`, so kafkajs users never load it.
 */
import { childLogger, type Logger } from '@effectively/core';
import type { Admin, BaseOptions, Consumer, ConnectionPool } from '@platformatic/kafka';
import type { Assignment, ConsumerClient, FetchedBatch, KafkaClientSettings, PartitionPosition, SkippedRange } from './kafka-adapter';
import { Fetcher } from './platformatic-fetcher';
import { loadPlatformaticKafka, type PlatformaticKafka } from './platformatic-loader';

/** Why an offset commit was refused without reaching Kafka, or withdrawn on a rejoin. */
export class OffsetCommitRefusedError extends Error {
  constructor(reason: string) {
    super(`Offset commit not made: ${reason}. The work is committed in Postgres; redelivered events are skipped as duplicates.`);
    this.name = 'OffsetCommitRefusedError';
  }
}

/** Creates the @platformatic/kafka-backed {@link ConsumerClient}. */
export function createPlatformaticConsumer(settings: KafkaClientSettings): ConsumerClient {
  return new PlatformaticConsumerClient(settings);
}

class PlatformaticConsumerClient implements ConsumerClient {
  private readonly log: Logger;
  private kafka: PlatformaticKafka | undefined;
  private consumer: Consumer | undefined;
  private pool: ConnectionPool | undefined;
  private fetcher: Fetcher | undefined;
  private topics: string[] = [];
  private fromBeginning = true;
  private running = false;
  private readonly assignmentListeners: Array<(assignment: Assignment) => void> = [];
  private readonly crashListeners: Array<(error: Error, willRestart: boolean) => void> = [];
  private readonly skippedListeners: Array<(range: SkippedRange) => void> = [];
  private readonly resetListeners: Array<(at: { topic: string; partition: number }) => void> = [];
  /** Offsets of commits in flight: emptied when the member rejoins, so the client's retry in the new generation commits nothing. */
  private readonly commitsInFlight = new Set<{ offsets: Array<{ topic: string; partition: number; offset: bigint; leaderEpoch: number }>; withdrawn: boolean }>();
  private rejoining: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly settings: KafkaClientSettings) {
    this.log = childLogger(settings.logger, { component: 'platformatic-kafka', clientId: settings.clientId });
  }

  private connection(): BaseOptions {
    const p = this.settings.platformatic ?? {};
    return {
      clientId: this.settings.clientId,
      bootstrapBrokers: this.settings.brokers,
      retries: p.retries ?? 10,
      retryDelay: p.retryDelay ?? 500,
      ...(p.tls === undefined ? {} : { tls: p.tls }),
      ...(p.tlsServerName === undefined ? {} : { tlsServerName: p.tlsServerName }),
      ...(p.sasl === undefined ? {} : { sasl: p.sasl }),
      ...(p.connectTimeout === undefined ? {} : { connectTimeout: p.connectTimeout }),
      ...(p.requestTimeout === undefined ? {} : { requestTimeout: p.requestTimeout }),
      ...(p.clientRack === undefined ? {} : { clientRack: p.clientRack }),
    };
  }

  private client(): Consumer {
    if (this.consumer === undefined) throw new Error('The platformatic consumer client is not connected: call connect() first.');
    return this.consumer;
  }

  async connect(): Promise<void> {
    const kafka = await loadPlatformaticKafka();
    this.kafka = kafka;
    const consumer = new kafka.Consumer<Buffer, Buffer, Buffer, Buffer>({
      ...this.connection(),
      groupId: this.settings.groupId,
      sessionTimeout: this.settings.sessionTimeoutMs,
      heartbeatInterval: this.settings.heartbeatIntervalMs,
      rebalanceTimeout: this.settings.rebalanceTimeoutMs,
      maxWaitTime: this.settings.maxWaitTimeMs ?? 500,
      maxBytesPerPartition: this.settings.maxBytesPerPartition,
      isolationLevel: 1, // read_committed
      autocommit: false,
      autocreateTopics: false,
    });
    this.consumer = consumer;
    // Errors the client cannot hand to a caller (a rejoin that failed after its retries): rejoin again.
    consumer.on('error', (error: Error) => this.crashed(error));
    consumer.on('consumer:group:join', (payload) => this.joined(payload.memberId, payload.assignments ?? []));
    consumer.on('consumer:group:rebalance', () => this.log.info({ groupId: this.settings.groupId }, 'group rebalancing; rejoining'));
    consumer.on('consumer:heartbeat:error', (payload) => this.log.warn({ err: payload.error, groupId: this.settings.groupId }, 'heartbeat failed'));
    this.pool = new kafka.ConnectionPool(this.settings.clientId, this.connection());
    await consumer.metadata({ topics: [] });
  }

  subscribe(topics: string[], fromBeginning: boolean): Promise<void> {
    this.topics = [...topics];
    this.fromBeginning = fromBeginning;
    this.client().topics.trackAll(...topics);
    return Promise.resolve();
  }

  async run(onBatch: (batch: FetchedBatch) => Promise<void>, partitionsConsumedConcurrently: number): Promise<void> {
    const consumer = this.client();
    this.fetcher = new Fetcher({
      consumer,
      pool: this.pool as ConnectionPool,
      topics: this.topics,
      maxWaitTimeMs: this.settings.maxWaitTimeMs ?? 500,
      maxBytesPerPartition: this.settings.maxBytesPerPartition,
      fromBeginning: this.fromBeginning,
      concurrency: partitionsConsumedConcurrently,
      logger: this.log,
      onBatch,
      onSkippedRange: (range) => {
        for (const l of this.skippedListeners) l(range);
      },
      onOffsetReset: (at) => {
        for (const l of this.resetListeners) l(at);
      },
      onError: (error) => this.crashed(error),
      isActive: () => consumer.isActive(),
    });
    this.running = true;
    // Started first: the join's assignment places the partitions, which needs the loop running.
    this.fetcher.start();
    await consumer.joinGroup(this.groupOptions());
  }

  private groupOptions(): { sessionTimeout: number; rebalanceTimeout: number; heartbeatInterval: number } {
    return { sessionTimeout: this.settings.sessionTimeoutMs, rebalanceTimeout: this.settings.rebalanceTimeoutMs, heartbeatInterval: this.settings.heartbeatIntervalMs };
  }

  /** A (re)join completed: earlier batches are stale, commits in flight are withdrawn, then the listeners learn the assignment. */
  private joined(memberId: string, assignments: Array<{ topic: string; partitions: number[] }>): void {
    for (const commit of this.commitsInFlight) {
      commit.withdrawn = true;
      commit.offsets.length = 0;
    }
    const partitions = assignments.flatMap(({ topic, partitions: ps }) => ps.map((partition) => ({ topic, partition })));
    this.fetcher?.assign(partitions);
    this.log.info({ groupId: this.settings.groupId, memberId, partitions }, 'joined the group');
    for (const l of this.assignmentListeners) l({ memberId, partitions });
  }

  private crashed(error: Error): void {
    if (!this.running) return;
    this.log.error({ err: error }, 'Kafka client error; carrying on (rejoining the group if it left it)');
    for (const l of this.crashListeners) l(error, true);
    const consumer = this.consumer;
    if (consumer === undefined || consumer.isActive() || this.rejoining !== undefined) return;
    this.rejoining = (async () => {
      for (let attempt = 1; this.running && !consumer.isActive(); attempt++) {
        await new Promise((r) => setTimeout(r, Math.min(10_000, 300 * 2 ** attempt)));
        if (!this.running || consumer.isActive()) break;
        await consumer.joinGroup(this.groupOptions()).catch((e: unknown) => this.log.warn({ err: e }, 'rejoining the group failed; retrying'));
      }
    })().finally(() => (this.rejoining = undefined));
  }

  async commit(offsets: Array<{ topic: string; partition: number; offset: string }>): Promise<void> {
    const consumer = this.client();
    const fetcher = this.fetcher;
    const foreign = offsets.filter((o) => fetcher === undefined || !fetcher.owns(o.topic, o.partition));
    if (foreign.length > 0) throw new OffsetCommitRefusedError(`this member does not own ${foreign.map((o) => `${o.topic}:${o.partition}`).join(', ')}`);
    if (!consumer.isActive()) throw new OffsetCommitRefusedError('the member is rejoining the group (a rebalance)');
    const request = { offsets: offsets.map((o) => ({ topic: o.topic, partition: o.partition, offset: BigInt(o.offset), leaderEpoch: -1 })), withdrawn: false };
    this.commitsInFlight.add(request);
    try {
      await consumer.commit({ offsets: request.offsets });
    } finally {
      this.commitsInFlight.delete(request);
    }
    if (request.withdrawn) throw new OffsetCommitRefusedError('the group was rebalanced while it was in flight');
  }

  pause(topic: string, partition: number): void {
    this.fetcher?.pause(topic, partition);
  }

  resume(topic: string, partition: number): void {
    this.fetcher?.resume(topic, partition);
  }

  seek(topic: string, partition: number, offset: string): void {
    this.fetcher?.seek(topic, partition, offset);
  }

  onAssignment(listener: (assignment: Assignment) => void): void {
    this.assignmentListeners.push(listener);
  }

  onCrash(listener: (error: Error, willRestart: boolean) => void): void {
    this.crashListeners.push(listener);
  }

  onSkippedRange(listener: (range: SkippedRange) => void): void {
    this.skippedListeners.push(listener);
  }

  onOffsetReset(listener: (at: { topic: string; partition: number }) => void): void {
    this.resetListeners.push(listener);
  }

  async positions(topic: string, partitions?: number[]): Promise<PartitionPosition[]> {
    const consumer = this.client();
    const ids = partitions ?? [...Array((await consumer.metadata({ topics: [topic] })).topics.get(topic)?.partitionsCount ?? 0).keys()];
    if (ids.length === 0) return [];
    const [committed, low, high] = await Promise.all([
      consumer.listCommittedOffsets({ topics: [{ topic, partitions: ids }] }),
      consumer.listOffsets({ topics: [topic], partitions: { [topic]: ids }, timestamp: -2n, isolationLevel: 1 }),
      consumer.listOffsets({ topics: [topic], partitions: { [topic]: ids }, timestamp: -1n, isolationLevel: 1 }),
    ]);
    return ids.map((partition) => {
      const c = committed.get(topic)?.[partition];
      return {
        partition,
        committed: c === undefined || c < 0n ? null : c.toString(),
        logStart: (low.get(topic)?.[partition] ?? 0n).toString(),
        highWatermark: (high.get(topic)?.[partition] ?? 0n).toString(),
      };
    });
  }

  async missingTopics(topics: string[]): Promise<string[]> {
    return this.withAdmin(async (admin) => {
      const existing = new Set(await admin.listTopics());
      return topics.filter((t) => !existing.has(t));
    });
  }

  async topicRetentionMs(topics: string[]): Promise<Map<string, number>> {
    return this.withAdmin(async (admin) => {
      const described = await admin.describeConfigs({ resources: topics.map((name) => ({ resourceType: 2, resourceName: name, configurationKeys: ['retention.ms'] })) });
      const out = new Map<string, number>();
      for (const r of described) {
        const value = r.configs.find((e) => e.name === 'retention.ms')?.value;
        if (typeof value === 'string' && /^-?\d+$/.test(value)) out.set(r.resourceName, Number(value) < 0 ? Number.POSITIVE_INFINITY : Number(value));
      }
      return out;
    });
  }

  private async withAdmin<R>(work: (admin: Admin) => Promise<R>): Promise<R> {
    const kafka = this.kafka ?? (await loadPlatformaticKafka());
    const admin = new kafka.Admin(this.connection());
    try {
      return await work(admin);
    } finally {
      await admin.close().catch((error: unknown) => this.log.debug({ err: error }, 'closing the admin client failed'));
    }
  }

  /** Stops fetching, waits for the batches being handled (their offsets are committed), and leaves the group. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (!this.running) return;
    await this.fetcher?.stop();
    this.running = false;
    await this.rejoining;
    const consumer = this.consumer;
    if (consumer !== undefined && consumer.isActive()) {
      await new Promise<void>((resolve) =>
        consumer.leaveGroup(false, (error) => {
          if (error) this.log.warn({ err: error }, 'leaving the group failed');
          resolve();
        }),
      );
    }
  }

  async disconnect(): Promise<void> {
    // After a stop that did not finish (the consumer's shutdownTimeoutMs), close anyway.
    if (this.stopping === undefined) await this.stop();
    const [consumer, pool] = [this.consumer, this.pool];
    this.consumer = undefined;
    this.pool = undefined;
    await pool?.close().catch((error: unknown) => this.log.debug({ err: error }, 'closing the fetch connections failed'));
    await consumer?.close().catch((error: unknown) => this.log.warn({ err: error }, 'closing the consumer failed'));
  }
}
