import { createOutbox, type OutboxMessage } from '@effectively/core';
import { createTopics, type ReadMessage } from '@effectively/testkit';
import type { Kafka } from 'kafkajs';
import { sql, type Kysely } from 'kysely';

/** An outbox row as the tests look at it. */
export interface Row {
  id: string;
  event_id: string;
  topic: string;
  key: string | null;
  status: 'pending' | 'published' | 'parked';
  attempts: number;
  last_error: string | null;
}

/** Enqueues `messages` in one committed transaction through the core outbox writer. */
export async function enqueue(db: Kysely<unknown>, schema: string, messages: OutboxMessage[]): Promise<void> {
  const writer = createOutbox({ schema });
  await db.transaction().execute(async (trx) => {
    await writer.publish(trx, messages);
  });
}

/** `n` messages over `keys` keys (key i % keys), ids `${prefix}-${i}`, in order. */
export function makeMessages(topic: string, n: number, keys: number, prefix: string, from = 0): OutboxMessage[] {
  return Array.from({ length: n }, (_, j) => {
    const i = from + j;
    return { eventId: `${prefix}-${i}`, topic, key: `${prefix}-k${i % keys}`, value: { i, prefix }, headers: { 'content-type': 'application/json', seq: String(i) } };
  });
}

export async function rows(db: Kysely<unknown>, schema: string): Promise<Row[]> {
  const { rows: r } = await sql<Row>`
    SELECT id::text AS id, event_id, topic, convert_from(message_key, 'UTF8') AS key, status, attempts, last_error
    FROM ${sql.id(schema, 'outbox')} ORDER BY id`.execute(db);
  return r;
}

export async function countByStatus(db: Kysely<unknown>, schema: string): Promise<Record<string, number>> {
  const { rows: r } = await sql<{ status: string; n: string }>`SELECT status, count(*) AS n FROM ${sql.id(schema, 'outbox')} GROUP BY status`.execute(db);
  return Object.fromEntries(r.map((x) => [x.status, Number(x.n)]));
}

export async function waitFor<R>(read: () => Promise<R>, check: (value: R) => boolean, timeoutMs = 90_000): Promise<R> {
  const until = Date.now() + timeoutMs;
  let last = await read();
  while (!check(last)) {
    if (Date.now() > until) throw new Error(`waitFor timed out; last value: ${JSON.stringify(last).slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 50));
    last = await read();
  }
  return last;
}

export function header(m: ReadMessage, name: string): string | undefined {
  const h = m.headers[name];
  if (h === undefined) return undefined;
  const v = Array.isArray(h) ? h[0] : h;
  return v === undefined ? undefined : v.toString();
}

/**
 * For every key, the outbox ids of its messages in topic order, first occurrence of each event
 * id only (a republished suffix after a crash repeats ids that came before).
 */
export function idsPerKey(messages: readonly ReadMessage[], idOf: ReadonlyMap<string, string>): Map<string, bigint[]> {
  const perKey = new Map<string, bigint[]>();
  const seen = new Set<string>();
  for (const m of messages) {
    const eventId = header(m, 'event-id');
    if (eventId === undefined || seen.has(eventId)) continue;
    seen.add(eventId);
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
