/**
 * Helpers for the lane, poison, pipeline and outage tests: a describe block's services, schemas
 * and relays, relay child processes, waiting, the lane table, and reading what reached Kafka.
 * Child relays, waiting and headers come from support/outbox.ts.
 */
import { createOutbox, type OutboxMessage } from '@effectively/core';
import { createTestSchema, readTopic, testKafka, testServices, type ReadMessage, type TestSchema } from '@effectively/testkit';
import type { Kafka } from 'kafkajs';
import { sql, type Kysely } from 'kysely';
import type { OutboxRelay } from '../../src';
import { header, type ChildRelay } from './outbox';

export { header, startChildRelay, waitFor, type ChildRelay } from './outbox';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What {@link relayTestBed} gives a describe block. */
export interface RelayTestBed {
  brokers: string[];
  databaseUrl: string;
  /** A kafkajs client on the test broker (admin, reading topics). */
  kafka: Kafka;
  /** A new migrated schema (named `prefix` + a unique suffix), dropped after all the block's tests. */
  newSchema(prefix: string): Promise<TestSchema>;
  /** `relay`, stopped after all the block's tests (before the schemas are dropped). */
  stopAfterAll<R extends OutboxRelay>(relay: R): R;
}

/**
 * The set-up of a describe block whose tests make their own schemas and relays: the test
 * services, a Kafka client, and an `afterAll` that stops the relays, then drops the schemas.
 * Call it in the describe block's body.
 */
export function relayTestBed(): RelayTestBed {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const schemas: TestSchema[] = [];
  const relays: OutboxRelay[] = [];

  afterAll(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await Promise.all(schemas.map((s) => s.drop()));
  });

  return {
    brokers,
    databaseUrl,
    kafka,
    newSchema: async (prefix) => {
      const s = await createTestSchema(databaseUrl, prefix);
      schemas.push(s);
      return s;
    },
    stopAfterAll: (relay) => {
      relays.push(relay);
      return relay;
    },
  };
}

/** Kills every child still running (afterAll). */
export async function killAll(children: readonly ChildRelay[]): Promise<void> {
  await Promise.all(children.map((c) => c.kill()));
}

/** `outbox_lanes` as it is now. */
export interface LaneRow {
  lane: number;
  owner: string | null;
  /** lease_until in ms since the epoch (-Infinity when free). */
  leaseUntil: number;
  epoch: number;
  /** The database's clock, ms since the epoch, when read. */
  now: number;
}

export async function laneRows(db: Kysely<unknown>, schema: string): Promise<LaneRow[]> {
  const { rows } = await sql<{ lane: number; owner: string | null; lease_until: number | string; epoch: string; now: number | string }>`
    SELECT lane, owner,
      CASE WHEN lease_until = '-infinity' THEN '-Infinity'::float8 ELSE EXTRACT(EPOCH FROM lease_until)::float8 * 1000 END AS lease_until,
      epoch::text AS epoch, EXTRACT(EPOCH FROM clock_timestamp())::float8 * 1000 AS now
    FROM ${sql.id(schema, 'outbox_lanes')} ORDER BY lane`.execute(db);
  return rows.map((r) => ({ lane: r.lane, owner: r.owner, leaseUntil: Number(r.lease_until), epoch: Number(r.epoch), now: Number(r.now) }));
}

/** Lanes per owner (NULL owners left out). */
export function lanesByOwner(lanes: readonly LaneRow[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of lanes) {
    if (l.owner === null) continue;
    let list = out.get(l.owner);
    if (list === undefined) out.set(l.owner, (list = []));
    list.push(l.lane);
  }
  return out;
}

/** Rows in the outbox by status. */
export async function outboxCounts(db: Kysely<unknown>, schema: string): Promise<{ pending: number; parked: number; total: number }> {
  const { rows } = await sql<{ pending: string; parked: string; total: string }>`
    SELECT count(*) FILTER (WHERE status = 'pending') AS pending, count(*) FILTER (WHERE status = 'parked') AS parked, count(*) AS total
    FROM ${sql.id(schema, 'outbox')}`.execute(db);
  const r = rows[0];
  return { pending: Number(r?.pending ?? 0), parked: Number(r?.parked ?? 0), total: Number(r?.total ?? 0) };
}

/** Event ids still in the outbox. */
export async function outboxEventIds(db: Kysely<unknown>, schema: string): Promise<Set<string>> {
  const { rows } = await sql<{ event_id: string }>`SELECT event_id FROM ${sql.id(schema, 'outbox')}`.execute(db);
  return new Set(rows.map((r) => r.event_id));
}

/** An outbox row as the poison test looks at it. */
export interface OutboxRowView {
  id: string;
  eventId: string;
  topic: string;
  key: string | null;
  status: string;
  attempts: number;
  lastError: string | null;
}

/** The outbox's rows in id order (numeric: `ORDER BY id` would sort the text alias). */
export async function outboxRows(db: Kysely<unknown>, schema: string): Promise<OutboxRowView[]> {
  const { rows } = await sql<{ id: string; event_id: string; topic: string; key: string | null; status: string; attempts: number; last_error: string | null }>`
    SELECT o.id::text AS id, o.event_id, o.topic, convert_from(o.message_key, 'UTF8') AS key, o.status, o.attempts, o.last_error
    FROM ${sql.id(schema, 'outbox')} o ORDER BY o.id`.execute(db);
  return rows.map((r) => ({ id: r.id, eventId: r.event_id, topic: r.topic, key: r.key, status: r.status, attempts: r.attempts, lastError: r.last_error }));
}

/** Publishes `messages` in one committed transaction. */
export async function publishCommitted(db: Kysely<unknown>, schema: string, messages: OutboxMessage | OutboxMessage[]): Promise<string[]> {
  const outbox = createOutbox({ schema });
  return db.transaction().execute(async (trx) => (await outbox.publish(trx, messages)).eventIds);
}

/** Messages with the first occurrence of each event id only, in partition/offset order (a republished batch repeats ids). */
export function firstOccurrences(messages: readonly ReadMessage[]): ReadMessage[] {
  const seen = new Set<string>();
  const out: ReadMessage[] = [];
  for (const m of messages) {
    const id = header(m, 'event-id');
    if (id === undefined) throw new Error(`message at ${m.topic}/${m.partition}@${m.offset} has no event-id header`);
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(m);
  }
  return out;
}

/**
 * Given per message a key and an order number, the keys whose numbers do not strictly increase
 * in the order given (with the first offending pair, for the failure message).
 */
export function orderViolations<T>(items: readonly T[], keyOf: (item: T) => string, numberOf: (item: T) => number): Array<{ key: string; previous: number; next: number }> {
  const last = new Map<string, number>();
  const bad = new Map<string, { key: string; previous: number; next: number }>();
  for (const item of items) {
    const key = keyOf(item);
    const n = numberOf(item);
    const prev = last.get(key);
    if (prev !== undefined && n <= prev && !bad.has(key)) bad.set(key, { key, previous: prev, next: n });
    last.set(key, n);
  }
  return [...bad.values()];
}

/** Per key, the `seq` values (of JSON values `{ seq }`) on `topic` in topic order, first occurrence of each event id only. */
export async function seqsByKey(kafka: Kafka, topic: string): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const m of firstOccurrences(await readTopic(kafka, topic))) {
    const key = m.key?.toString() ?? '<null>';
    out.set(key, [...(out.get(key) ?? []), jsonValue<{ seq: number }>(m).seq]);
  }
  return out;
}

/** The JSON value of a message. */
export function jsonValue<T>(m: ReadMessage): T {
  if (m.value === null) throw new Error(`message at ${m.topic}/${m.partition}@${m.offset} is a tombstone`);
  return JSON.parse(m.value.toString('utf8')) as T;
}
