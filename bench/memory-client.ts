// An in-memory ConsumerClient (the consumer's `client` seam): hands pre-built partitions to the
// idempotent consumer in fetched batches, without Kafka, so database-side costs can be measured
// alone (bench/growth.ts). Offsets commits are accepted and ignored.
import type { ConsumerClient, FetchedBatch, RawMessage } from '@effectively/kafka';

export interface MemoryFeed {
  client: () => ConsumerClient;
  /** Resolves when every partition has been handed over and handled. */
  finished: Promise<void>;
  /** Epoch ms of the first batch handed over (0 before). */
  startedAt(): number;
}

/** Per `topic:partition` of this process: the offset the next feed starts at. */
const nextOffsets = new Map<string, bigint>();

/**
 * `messages` moved up to start where the previous feed of the same topic and partition in this
 * process ended: offsets never repeat, as in a Kafka topic. A consumer's attempt bookkeeping is per
 * offset: the record a per-event run leaves (offsets 2,000-3,599, say, kept after they committed)
 * made a later batch-mode run of the same group, fed offsets 0.. again, take those offsets for an
 * unfinished run's and handle them one per transaction (bench:growth's batch runs fell to ~6,000
 * events/s after a per-event run, from ~45,000).
 */
function continueOffsets(topic: string, partition: number, messages: RawMessage[]): RawMessage[] {
  const key = `${topic}:${partition}`;
  const base = nextOffsets.get(key) ?? 0n;
  const moved = messages.map((m) => ({ ...m, offset: (BigInt(m.offset) + base).toString() }));
  const last = moved[moved.length - 1];
  if (last !== undefined) nextOffsets.set(key, BigInt(last.offset) + 1n);
  return moved;
}

/**
 * `partitions[p]` are partition p's messages in offset order; handed over `fetchSize` at a time,
 * their offsets continuing after those of earlier feeds of the topic (see {@link continueOffsets}).
 */
export function memoryFeed(topic: string, given: RawMessage[][], fetchSize = 2_000): MemoryFeed {
  const partitions = given.map((messages, partition) => continueOffsets(topic, partition, messages));
  let started = 0;
  let finish: () => void = () => undefined;
  let fail: (e: unknown) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const client = (): ConsumerClient => {
    let assignment: ((a: { memberId: string; partitions: Array<{ topic: string; partition: number }> }) => void) | undefined;
    let running = true;
    // A partition the consumer pauses (e.g. until its fence is taken) is handed over again, from
    // after its last resolved offset, once it is resumed: what the Kafka client does.
    const paused = new Set<number>();
    const resumed = new Map<number, () => void>();
    const resolved = new Map<number, bigint>();
    const pauses = new Map<number, number>();
    return {
      connect: async () => undefined,
      subscribe: async () => undefined,
      run: async (onBatch, concurrency) => {
        assignment?.({ memberId: 'bench-member', partitions: partitions.map((_, partition) => ({ topic, partition })) });
        const queue = partitions.map((messages, partition) => ({ partition, messages }));
        const worker = async (): Promise<void> => {
          for (let next = queue.shift(); next !== undefined && running; next = queue.shift()) {
            const p = next.partition;
            for (let i = 0; i < next.messages.length && running; ) {
              if (started === 0) started = Date.now();
              const done = resolved.get(p);
              const slice = next.messages.slice(i, i + fetchSize).filter((m) => done === undefined || BigInt(m.offset) > done);
              const batch: FetchedBatch = {
                topic,
                partition: p,
                messages: slice,
                resolveOffset: (offset) => void resolved.set(p, BigInt(offset)),
                heartbeat: async () => undefined,
                isRunning: () => running,
                isStale: () => false,
              };
              const before = pauses.get(p) ?? 0;
              if (slice.length > 0) await onBatch(batch);
              if ((pauses.get(p) ?? 0) !== before && running) {
                // Paused while handling it (maybe resumed already): hand the rest over again.
                if (paused.has(p)) await new Promise<void>((r) => resumed.set(p, r));
                continue;
              }
              i += fetchSize;
            }
          }
        };
        void Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker)).then(() => finish(), fail);
      },
      commit: async () => undefined,
      pause: (_topic, partition) => {
        paused.add(partition);
        pauses.set(partition, (pauses.get(partition) ?? 0) + 1);
      },
      resume: (_topic, partition) => {
        paused.delete(partition);
        resumed.get(partition)?.();
        resumed.delete(partition);
      },
      onAssignment: (listener) => {
        assignment = listener;
      },
      onCrash: () => undefined,
      stop: async () => {
        running = false;
        for (const r of resumed.values()) r();
      },
      disconnect: async () => undefined,
    };
  };
  return { client, finished, startedAt: () => started };
}

/** A message as the consumer sees it, with the `event-id` header. */
export function rawMessage(topic: string, partition: number, offset: number, eventId: string, value: string): RawMessage {
  return { topic, partition, offset: String(offset), key: null, value: Buffer.from(value), headers: { 'event-id': eventId }, timestamp: '0' };
}
