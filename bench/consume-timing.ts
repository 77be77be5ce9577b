// Timed consumption for the database-side benches (bench/growth.ts, bench/prune-cost.ts,
// bench/retention-cost.ts): the idempotent consumer with no-op handlers, fed from memory through
// its `client` seam (bench/memory-client.ts, no Kafka), timed from the first batch handed over
// to the end of the feed, with what else the bench runs meanwhile (a pruner, a rotator).
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { silentLogger } from '@effectively/core';
import { IdempotentConsumer, type RawMessage } from '@effectively/kafka';
import { memoryFeed, rawMessage } from './memory-client';

/** The consumer a timed run builds (besides its feed, no-op handlers and silent logger). */
export interface TimedConsumer {
  db: Kysely<unknown>;
  schema: string;
  group: string;
  topic: string;
  mode: 'batch' | 'event';
  batchSize: number;
  /** Partitions handled at once; the consumer's default when omitted. */
  partitionsConsumedConcurrently?: number;
  /** Whether the consumer rotates generations itself; the consumer's default when omitted. */
  rotateGenerations?: boolean;
}

/** What a timed run measured. */
export interface TimedRun {
  /** Messages fed. */
  items: number;
  /** Seconds from the first batch handed over to the end of the feed. */
  seconds: number;
  /** When the feed ended (epoch ms). */
  end: number;
}

/**
 * One timed run: a new consumer ({@link TimedConsumer}) claims `partitions` (`partitions[p]` is
 * partition p's messages in offset order), fed from memory. `alongside`, when given, is called
 * just before the consumer starts and should run while `running()` holds: it turns false once
 * the feed has ended, and the run waits for it before stopping the consumer. Throws unless
 * every distinct id was applied once and every message handled (a partition paused and handed
 * over again, e.g. until its fence is taken, may repeat some as duplicates).
 */
export async function timedConsume(c: TimedConsumer, partitions: RawMessage[][], alongside?: (running: () => boolean) => Promise<void>): Promise<TimedRun> {
  const feed = memoryFeed(c.topic, partitions);
  const consumer = new IdempotentConsumer<unknown>({
    brokers: ['unused:9092'],
    groupId: c.group,
    topics: [c.topic],
    db: c.db,
    schema: c.schema,
    mode: c.mode,
    batchSize: c.batchSize,
    ...(c.partitionsConsumedConcurrently === undefined ? {} : { partitionsConsumedConcurrently: c.partitionsConsumedConcurrently }),
    handler: async () => undefined,
    batchHandler: async () => undefined,
    logger: silentLogger(),
    client: feed.client,
    ...(c.rotateGenerations === undefined ? {} : { rotateGenerations: c.rotateGenerations }),
  });
  let running = true;
  const beside = alongside?.(() => running);
  await consumer.start();
  await feed.finished;
  const end = Date.now();
  running = false;
  await beside;
  await consumer.stop();
  const s = consumer.stats;
  const messages = partitions.flat();
  const unique = new Set(messages.map((m) => m.headers['event-id'] as string)).size;
  if (s.processed !== unique || s.processed + s.duplicates < messages.length) throw new Error(`${c.mode}: applied ${s.processed} of ${unique} distinct ids, handled ${s.processed + s.duplicates} of ${messages.length} messages`);
  return { items: messages.length, seconds: (end - feed.startedAt()) / 1_000, end };
}

/**
 * `n` messages on `topic` over `partitions` partitions (message i on partition i mod
 * `partitions`): fresh UUIDv4 ids, a share `duplicateRate` of them copies of one of the
 * partition's last 1,000 ids (sent again a little later, on the same partition).
 */
export function messagesWithCopies(topic: string, partitions: number, n: number, duplicateRate: number): RawMessage[][] {
  const out: RawMessage[][] = Array.from({ length: partitions }, () => []);
  const ids: string[][] = Array.from({ length: partitions }, () => []);
  for (let i = 0; i < n; i++) {
    const p = i % partitions;
    const seen = ids[p] as string[];
    const copy = seen.length > 10 && Math.random() < duplicateRate;
    const id = copy ? (seen[seen.length - 1 - Math.floor(Math.random() * Math.min(seen.length, 1_000))] as string) : randomUUID();
    if (!copy) seen.push(id);
    const list = out[p] as RawMessage[];
    list.push(rawMessage(topic, p, list.length, id, `{"n":${i}}`));
  }
  return out;
}

/**
 * Warm-up and sizing: `run(n)`, then runs of more messages (1.5 times what the last run's rate
 * does in `minSeconds`, rounded up to a multiple of `step`) until one lasts at least
 * `minSeconds`. Returns that message count and its run.
 */
export async function sizeRuns<R extends { items: number; seconds: number }>(n: number, minSeconds: number, step: number, run: (n: number) => Promise<R>): Promise<{ n: number; run: R }> {
  let m = await run(n);
  while (m.seconds < minSeconds) {
    n = Math.ceil(((m.items / m.seconds) * minSeconds * 1.5) / step) * step;
    m = await run(n);
  }
  return { n, run: m };
}
