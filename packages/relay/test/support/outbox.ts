/**
 * Helpers for the relay's publish, crash, commit-order and listener tests.
 *
 * The relay DELETES a row once Kafka acknowledged it, so the outbox holds only what is still to
 * be published (pending, backing off, parked): "published" means "gone from the table", and the
 * outbox id of a row must be captured when it is written (see {@link enqueue}) to check order
 * against what reached Kafka afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { createOutbox, type OutboxMessage, type OutboxOptions } from '@effectively/core';
import { createTopics, testClient, type ReadMessage } from '@effectively/testkit';
import type { Kafka } from 'kafkajs';
import { sql, type Kysely, type Transaction } from 'kysely';
import { createKafkajsProducer, createPlatformaticProducer, type ProducerClient, type ProducerClientSettings } from '../../src';

/** The {@link ProducerClient} of the client under test ({@link testClient}), for tests that wrap it. */
export function testProducer(settings: ProducerClientSettings): ProducerClient {
  return (testClient() === 'platformatic' ? createPlatformaticProducer : createKafkajsProducer)(settings);
}

/** An outbox row as the tests look at it. */
export interface Row {
  id: string;
  event_id: string;
  topic: string;
  key: string | null;
  /** 'published' only for rows written by other tools: the relay deletes what it publishes. */
  status: 'pending' | 'published' | 'parked';
  attempts: number;
  last_error: string | null;
  lane: number;
}

/** The outbox ids of rows just written in `trx`, by event id (a row already there keeps its older id). */
export async function outboxIds(trx: Transaction<unknown> | Kysely<unknown>, schema: string, eventIds: readonly string[]): Promise<Map<string, string>> {
  const { rows: r } = await sql<{ id: string; event_id: string }>`
    SELECT id::text AS id, event_id FROM ${sql.id(schema, 'outbox')} WHERE event_id = ANY(${[...eventIds]}::text[])`.execute(trx);
  return new Map(r.map((x) => [x.event_id, x.id]));
}

/**
 * Writes `messages` in one committed transaction through the core outbox writer, and returns
 * their outbox ids by event id, read inside that transaction (before any relay can delete them).
 */
export async function enqueue(db: Kysely<unknown>, schema: string, messages: OutboxMessage[], options: Omit<OutboxOptions, 'schema'> = {}): Promise<Map<string, string>> {
  const writer = createOutbox({ ...options, schema });
  return db.transaction().execute(async (trx) => {
    const { eventIds } = await writer.publish(trx, messages);
    return outboxIds(trx, schema, eventIds);
  });
}

/** `n` messages over `keys` keys (key i % keys), ids `${prefix}-${i}`, in order. */
export function makeMessages(topic: string, n: number, keys: number, prefix: string, from = 0): OutboxMessage[] {
  return Array.from({ length: n }, (_, j) => {
    const i = from + j;
    return { eventId: `${prefix}-${i}`, topic, key: `${prefix}-k${i % keys}`, value: { i, prefix }, headers: { seq: String(i) } };
  });
}

/** The rows still in the outbox (not yet published, or parked), in id order. */
export async function rows(db: Kysely<unknown>, schema: string): Promise<Row[]> {
  const { rows: r } = await sql<Row>`
    SELECT o.id::text AS id, o.event_id, o.topic, convert_from(o.message_key, 'UTF8') AS key, o.status, o.attempts, o.last_error, o.lane
    FROM ${sql.id(schema, 'outbox')} o ORDER BY o.id`.execute(db);
  return r;
}

/** How many rows the outbox holds. */
export async function outboxCount(db: Kysely<unknown>, schema: string): Promise<number> {
  const { rows: r } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(schema, 'outbox')}`.execute(db);
  return Number(r[0]?.n ?? 0);
}

export async function countByStatus(db: Kysely<unknown>, schema: string): Promise<Record<string, number>> {
  const { rows: r } = await sql<{ status: string; n: string }>`SELECT status, count(*) AS n FROM ${sql.id(schema, 'outbox')} GROUP BY status`.execute(db);
  return Object.fromEntries(r.map((x) => [x.status, Number(x.n)]));
}

/** Polls `read` every 50 ms until `check` holds; throws with the last value after `timeoutMs`. */
export async function waitFor<R>(read: () => Promise<R> | R, check: (value: R) => boolean, timeoutMs = 90_000, what = 'condition'): Promise<R> {
  const until = Date.now() + timeoutMs;
  let last = await read();
  while (!check(last)) {
    if (Date.now() > until) {
      throw new Error(`waitFor(${what}) timed out after ${timeoutMs} ms; last value: ${JSON.stringify(last, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)).slice(0, 500)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
    last = await read();
  }
  return last;
}

/** Rejects with `what` when `promise` has not settled within `ms` (a bound for steps that must not hang). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

export function header(m: ReadMessage, name: string): string | undefined {
  const h = m.headers[name];
  if (h === undefined) return undefined;
  const v = Array.isArray(h) ? h[0] : h;
  return v === undefined ? undefined : v.toString();
}

/** The `event-id` header of every message, in topic order (undefined where missing). */
export function eventIdsOf(messages: readonly ReadMessage[]): Array<string | undefined> {
  return messages.map((m) => header(m, 'event-id'));
}

/**
 * What a downstream consumer that deduplicates by `event-id` applies: the first message of each
 * event id, in topic order. Throws on a message without an event id.
 */
export function dedupe(messages: readonly ReadMessage[]): ReadMessage[] {
  const seen = new Set<string>();
  return messages.filter((m) => {
    const id = header(m, 'event-id');
    if (id === undefined) throw new Error(`message at ${m.topic}/${m.partition}@${m.offset} has no event-id header`);
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

/**
 * For every key, the outbox ids of its messages in topic order, first occurrence of each event
 * id only (a republished suffix after a crash repeats ids that came before). `idOf`: the ids
 * captured when the rows were written ({@link enqueue}).
 */
export function idsPerKey(messages: readonly ReadMessage[], idOf: ReadonlyMap<string, string>): Map<string, bigint[]> {
  const perKey = new Map<string, bigint[]>();
  for (const m of dedupe(messages)) {
    const eventId = header(m, 'event-id') as string;
    const key = m.key === null ? '<null>' : m.key.toString();
    const id = idOf.get(eventId);
    if (id === undefined) throw new Error(`message with unknown event id ${eventId}`);
    let list = perKey.get(key);
    if (list === undefined) perKey.set(key, (list = []));
    list.push(BigInt(id));
  }
  return perKey;
}

/** Keys whose ids are not strictly increasing in topic order (NULL keys excluded). */
export function outOfOrderKeys(perKey: ReadonlyMap<string, bigint[]>): string[] {
  return [...perKey].filter(([key, ids]) => key !== '<null>' && ids.some((id, i) => i > 0 && id <= (ids[i - 1] as bigint))).map(([key]) => key);
}

/** The lane a key hashes to, as Postgres computes it (`outbox_lane`). */
export async function laneOfKey(db: Kysely<unknown>, schema: string, key: string): Promise<number> {
  const { rows: r } = await sql<{ lane: number }>`SELECT ${sql.id(schema, 'outbox_lane')}(convert_to(${key}, 'UTF8'), '') AS lane`.execute(db);
  return r[0]?.lane as number;
}

/** The lane of a keyless row with this event id. */
export async function laneOfKeyless(db: Kysely<unknown>, schema: string, eventId: string): Promise<number> {
  const { rows: r } = await sql<{ lane: number }>`SELECT ${sql.id(schema, 'outbox_lane')}(NULL, ${eventId}) AS lane`.execute(db);
  return r[0]?.lane as number;
}

/** Messages on `topic` now (sum of end offsets: every record appended, duplicates included). */
export async function topicSize(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((n, p) => n + Number(BigInt(p.high) - BigInt(p.low)), 0);
  } finally {
    await admin.disconnect();
  }
}

/**
 * `createTopics` with a few retries: on a broker that has just started, its leader wait can
 * fail with UNKNOWN_TOPIC_OR_PARTITION (a testkit race, not the relay's); the names are new each try.
 */
export async function newTopic(kafka: Kafka, prefix: string, partitions = 1): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      const [topic] = await createTopics(kafka, [{ prefix, partitions }]);
      return topic as string;
    } catch (err) {
      if (attempt >= 4) throw err;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
}

export const RELAY_CHILD_FIXTURE = path.join(__dirname, '..', 'fixtures', 'relay-child.ts');

/** A relay in a child process (test/fixtures/relay-child.ts). */
export interface ChildRelay {
  readonly relayId: string;
  readonly process: ChildProcess;
  /** Resolves once it exited, with its code (null when killed) and signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The stats it printed on a clean stop. */
  stats(): Record<string, unknown> | undefined;
  stderr(): string;
  /** SIGTERM (clean stop); resolves with how it exited. */
  terminate(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL unless it already exited; resolves once it has. */
  kill(): Promise<void>;
}

/** Spawns the relay child fixture with `env` and waits (at most `readyTimeoutMs`) for `ready <id>`. */
export async function startChildRelay(env: Record<string, string>, readyTimeoutMs = 30_000): Promise<ChildRelay> {
  const child = spawn(process.execPath, ['--import', 'tsx', RELAY_CHILD_FIXTURE], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stats: Record<string, unknown> | undefined;
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-20_000)));
  // 'close' (not 'exit'): fires after stdout is drained, so the stats line has been read.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  const relayId = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`relay child not ready within ${readyTimeoutMs} ms; stderr: ${stderr.slice(-2000)}`));
    }, readyTimeoutMs);
    readline.createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      if (line.startsWith('ready ')) {
        clearTimeout(timer);
        resolve(line.slice('ready '.length));
      } else if (line.startsWith('stats ')) {
        stats = JSON.parse(line.slice('stats '.length)) as Record<string, unknown>;
      }
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`relay child exited (${code ?? signal}) before it was ready; stderr: ${stderr.slice(-2000)}`));
    });
  });
  const done = (): boolean => child.exitCode !== null || child.signalCode !== null;
  return {
    relayId,
    process: child,
    exited,
    stats: () => stats,
    stderr: () => stderr,
    terminate: async () => {
      if (!done()) child.kill('SIGTERM');
      return exited;
    },
    kill: async () => {
      if (!done()) child.kill('SIGKILL');
      await exited;
    },
  };
}
