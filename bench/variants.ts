import { spawn } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { createOutbox, silentLogger, type Database } from '@effectively/core';
import { OutboxRelay } from '@effectively/relay';
import { testKafka, uniqueName } from '@effectively/testkit';
import { logLevel, Kafka } from 'kafkajs';
import { sql } from 'kysely';
import { createAggregator } from '../examples/ad-spend/src/aggregator';
import { parseSpendEvent, type SpendEvent } from '../examples/ad-spend/src/events';
import type { GroundTruth } from '../examples/ad-spend/src/generator';
import { applySpend, storedTotals } from '../examples/ad-spend/src/store';

/** What every variant is given: one topic with the same messages, one schema, the truth. */
export interface BenchContext {
  brokers: string[];
  databaseUrl: string;
  database: Database;
  schema: string;
  topic: string;
  alertsTopic: string;
  messages: number;
  /** Distinct event ids among the messages. */
  unique: number;
  /** Per partition, the offset of its last message. */
  lastOffsets: Map<number, string>;
  truth: GroundTruth;
  concurrency: number;
  timeoutMs: number;
}

/** One run of one variant. */
export interface Measurement {
  items: number;
  seconds: number;
  /** Stored totals equal the truth (null: not applicable, e.g. producer variants). */
  correct: boolean | null;
  /** Relative error of the grand total, e.g. 0.23 = 23 % too much. */
  error: number | null;
}

/** The Kafka client a variant runs on. */
export type BenchClient = 'kafkajs' | 'platformatic';

/** A variant a child process can rebuild (bench/client-child.ts): the client comparison. */
export type ChildVariantSpec = { kind: 'consumer'; mode: 'event' | 'batch'; batchSize: number; client: BenchClient } | { kind: 'relay'; batchSize: number; client: BenchClient };

export interface Variant {
  name: string;
  group: 'consume' | 'produce';
  /** One transaction per message: its warm-up run starts on a smaller topic (4,000 messages). */
  slow?: boolean;
  /** Points of the scaling curve: mode, partitions consumed concurrently per process, processes. */
  scaling?: { mode: 'event' | 'batch'; concurrency: number; processes: number };
  /** The client comparison: which client, and the name of what is compared (the same for both clients). */
  comparison?: { client: BenchClient; what: string; node: string };
  run(ctx: BenchContext): Promise<Measurement>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Empties the effect tables so every run starts from nothing. */
export async function resetState(ctx: BenchContext): Promise<void> {
  const t = (name: string) => sql.id(ctx.schema, name);
  await sql`TRUNCATE ${t('campaign_daily_spend')}, ${t('outbox')}, ${t('processed_events')}, ${t('partition_fences')}, ${t('bench_seen')}`.execute(ctx.database.db);
}

async function check(ctx: BenchContext): Promise<Pick<Measurement, 'correct' | 'error'>> {
  const stored = await storedTotals(ctx.database.db, ctx.schema);
  const sum = (t: Record<string, Record<string, number>>): number => Object.values(t).reduce((a, byDay) => a + Object.values(byDay).reduce((x, y) => x + y, 0), 0);
  let correct = true;
  for (const c of new Set([...Object.keys(stored), ...Object.keys(ctx.truth.totals)])) {
    for (const d of new Set([...Object.keys(stored[c] ?? {}), ...Object.keys(ctx.truth.totals[c] ?? {})])) {
      if ((stored[c]?.[d] ?? 0) !== (ctx.truth.totals[c]?.[d] ?? 0)) correct = false;
    }
  }
  const expected = sum(ctx.truth.totals);
  return { correct, error: (sum(stored) - expected) / expected };
}

/** Times a consumer from the first message it handles until `done()` says all messages are handled. */
async function timeConsumer(ctx: BenchContext, start: (mark: () => void) => Promise<{ done: () => boolean; stop: () => Promise<void> }>): Promise<Measurement> {
  await resetState(ctx);
  let first = 0;
  const consumer = await start(() => {
    if (first === 0) first = Date.now();
  });
  const deadline = Date.now() + ctx.timeoutMs;
  while (!consumer.done() && Date.now() < deadline) await sleep(20);
  const end = Date.now();
  const finished = consumer.done();
  await consumer.stop();
  if (!finished) throw new Error(`timed out after ${ctx.timeoutMs} ms`);
  return { items: ctx.messages, seconds: (end - first) / 1_000, ...(await check(ctx)) };
}

function decode(value: Buffer | null): SpendEvent {
  return parseSpendEvent(JSON.parse((value ?? Buffer.alloc(0)).toString('utf8')));
}

function quietKafka(ctx: BenchContext): Kafka {
  return new Kafka({ clientId: 'bench', brokers: ctx.brokers, logLevel: logLevel.NOTHING });
}

/** Plain kafkajs, eachBatch, one transaction with one multi-row upsert per batch, no deduplication. */
export const rawBatched: Variant = {
  name: 'raw kafkajs, batched upsert, no dedup',
  group: 'consume',
  run: (ctx) =>
    timeConsumer(ctx, async (mark) => {
      const outbox = createOutbox({ schema: ctx.schema });
      const consumer = quietKafka(ctx).consumer({ groupId: uniqueName('raw'), sessionTimeout: 10_000 });
      const finished = new Set<number>();
      await consumer.connect();
      await consumer.subscribe({ topic: ctx.topic, fromBeginning: true });
      await consumer.run({
        partitionsConsumedConcurrently: ctx.concurrency,
        eachBatch: async ({ batch }) => {
          mark();
          const events = batch.messages.map((m) => decode(m.value));
          await ctx.database.db.transaction().execute((trx) => applySpend(trx, ctx.schema, events, outbox, ctx.alertsTopic));
          if (batch.messages.some((m) => m.offset === ctx.lastOffsets.get(batch.partition))) finished.add(batch.partition);
        },
      });
      // Done when every partition's last message is applied (Kafka may redeliver: counting messages would stop early).
      return { done: () => finished.size >= ctx.lastOffsets.size, stop: () => consumer.disconnect() };
    }),
};

/** The usual hand-written dedup: per message, one transaction: look the id up, apply, remember the id. */
export const naive: Variant = {
  name: 'naive: check id, apply, insert id (tx per message)',
  group: 'consume',
  slow: true,
  run: (ctx) =>
    timeConsumer(ctx, async (mark) => {
      const outbox = createOutbox({ schema: ctx.schema });
      const seenTable = sql.id(ctx.schema, 'bench_seen');
      const consumer = quietKafka(ctx).consumer({ groupId: uniqueName('naive'), sessionTimeout: 10_000 });
      let seen = 0;
      await consumer.connect();
      await consumer.subscribe({ topic: ctx.topic, fromBeginning: true });
      await consumer.run({
        partitionsConsumedConcurrently: ctx.concurrency,
        eachMessage: async ({ message }) => {
          mark();
          const event = decode(message.value);
          let applied = false;
          await ctx.database.db.transaction().execute(async (trx) => {
            const { rows } = await sql`SELECT 1 FROM ${seenTable} WHERE event_id = ${event.event_id}`.execute(trx);
            if (rows.length > 0) return;
            await applySpend(trx, ctx.schema, [event], outbox, ctx.alertsTopic);
            await sql`INSERT INTO ${seenTable} (event_id) VALUES (${event.event_id})`.execute(trx);
            applied = true;
          });
          if (applied) seen++;
        },
      });
      // Done when every distinct event is applied (Kafka may redeliver: counting messages would stop early).
      return { done: () => seen >= ctx.unique, stop: () => consumer.disconnect() };
    }),
};

/** effectively's IdempotentConsumer (the ad-spend aggregator) in event or batch mode. */
export function effectively(mode: 'event' | 'batch', batchSize = 500, concurrency?: number, client?: BenchClient): Variant {
  const base = mode === 'event' ? 'effectively, per-event mode' : `effectively, batch mode (${batchSize})`;
  return {
    name: concurrency === undefined ? base : `${base}, ${concurrency} partition${concurrency === 1 ? '' : 's'} at once`,
    group: 'consume',
    slow: mode === 'event',
    ...(concurrency === undefined ? {} : { scaling: { mode, concurrency, processes: 1 } }),
    run: (ctx) =>
      timeConsumer(ctx, async (mark) => {
        const consumer = createAggregator({
          brokers: ctx.brokers,
          ...(client === undefined ? {} : { client }),
          db: ctx.database.db,
          schema: ctx.schema,
          spendTopic: ctx.topic,
          alertsTopic: ctx.alertsTopic,
          groupId: uniqueName(`eff_${mode}`),
          mode,
          batchSize,
          partitionsConsumedConcurrently: concurrency ?? ctx.concurrency,
          onReceived: mark,
          logger: silentLogger(),
        });
        await consumer.start();
        const s = consumer.stats;
        // Done when every distinct event is applied (redeliveries count as duplicates again).
        return { done: () => s.processed + s.deadLettered >= ctx.unique, stop: () => consumer.stop() };
      }),
  };
}

interface ChildReport {
  t: number;
  /** Distinct events applied so far. */
  n: number;
  first: number;
}

/**
 * `processes` aggregators, each in a process of its own (bench/consumer-child.ts), in one group.
 * Timed from the moment every process has handled a message (the group has settled) until all
 * messages are handled; the messages handled before that moment are not counted.
 */
export function effectivelyProcesses(mode: 'event' | 'batch', batchSize: number, processes: number, concurrency: number): Variant {
  return {
    name: `${mode === 'event' ? 'effectively, per-event mode' : `effectively, batch mode (${batchSize})`}, ${processes} processes × ${concurrency} partition${concurrency === 1 ? '' : 's'} at once`,
    group: 'consume',
    slow: mode === 'event',
    scaling: { mode, concurrency, processes },
    run: async (ctx) => {
      await resetState(ctx);
      const group = uniqueName(`eff_proc_${mode}`);
      const histories: ChildReport[][] = [];
      const children = Array.from({ length: processes }, (_, i) => {
        const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'consumer-child.ts')], {
          env: { ...process.env, BROKERS: ctx.brokers.join(','), DATABASE_URL: ctx.databaseUrl, SCHEMA: ctx.schema, TOPIC: ctx.topic, ALERTS_TOPIC: ctx.alertsTopic, GROUP: group, MODE: mode, BATCH_SIZE: String(batchSize), CONCURRENCY: String(concurrency) },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        const history: ChildReport[] = (histories[i] = []);
        createInterface({ input: child.stdout }).on('line', (line) => {
          if (line.startsWith('{')) history.push(JSON.parse(line) as ChildReport);
        });
        return child;
      });
      const latest = (h: ChildReport[]): ChildReport => h[h.length - 1] ?? { t: 0, n: 0, first: 0 };
      const total = (): number => histories.reduce((a, h) => a + latest(h).n, 0);
      try {
        const deadline = Date.now() + ctx.timeoutMs;
        while (total() < ctx.unique && Date.now() < deadline) await sleep(50);
        if (total() < ctx.unique) throw new Error(`${processes} processes applied ${total()}/${ctx.unique} distinct events in time`);
      } finally {
        await Promise.all(children.map((c) => new Promise<void>((resolve) => {
          if (c.exitCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGTERM');
          setTimeout(() => c.kill('SIGKILL'), 30_000).unref();
        })));
      }
      // Every process busy from `start`; each one's count at `start` is its last report before it.
      // Counts are distinct events applied (redeliveries after the group settles are not counted twice).
      const start = Math.max(...histories.map((h) => latest(h).first));
      const before = histories.reduce((a, h) => a + ([...h].reverse().find((r) => r.t <= start)?.n ?? 0), 0);
      const end = Math.max(...histories.map((h) => h.find((r) => r.n === latest(h).n)?.t ?? 0));
      // Distinct events applied in the window, scaled to messages (the stream's messages per distinct event).
      return { items: ((ctx.unique - before) * ctx.messages) / ctx.unique, seconds: (end - start) / 1_000, ...(await check(ctx)) };
    },
  };
}

/** Rows an alert-sized payload (~200 bytes) per unique event, for the producer comparison. */
const payload = (i: number): string => JSON.stringify({ type: 'campaign.budget_exceeded', campaign_id: `cmp-${i % 50}`, day: '2026-01-05', daily_budget: 1_000_000_000, total: 1_000_000_000 + i, note: 'x'.repeat(60) });

/**
 * The relay publishing N committed outbox rows (idempotent producer, one request in flight), timed
 * over back-to-back drainOnce() cycles after a warm-up, until relay.stats.published says all N
 * went out; the relay deletes what Kafka acknowledged, so the outbox must then be empty.
 */
export function relay(batchSize = 500, client?: BenchClient): Variant {
  return {
    name: `relay: outbox → Kafka (batch ${batchSize})`,
    group: 'produce',
    run: async (ctx) => {
      const n = ctx.messages;
      await resetState(ctx);
      const outbox = createOutbox({ schema: ctx.schema });
      const r = new OutboxRelay({ ...(client === undefined ? {} : { client }), brokers: ctx.brokers, db: ctx.database.db, databaseUrl: ctx.databaseUrl, schema: ctx.schema, batchSize });
      try {
        // Warm up (producer connected, lanes leased) with one row, like the direct producer's connect().
        await outbox.publish(ctx.database.db, [{ eventId: uniqueName('warm'), topic: ctx.alertsTopic, key: 'warm', value: payload(0) }]);
        const deadline = Date.now() + ctx.timeoutMs;
        while (r.stats.published === 0 && Date.now() < deadline) await r.drainOnce();
        if (r.stats.published !== 1) throw new Error(`relay warm-up published ${r.stats.published} rows`);
        for (let i = 0; i < n; i += 1_000) {
          const chunk = Array.from({ length: Math.min(1_000, n - i) }, (_, k) => ({ eventId: uniqueName(`o${i + k}`), topic: ctx.alertsTopic, key: `cmp-${(i + k) % 50}`, value: payload(i + k) }));
          await outbox.publish(ctx.database.db, chunk);
        }
        const started = Date.now();
        while (r.stats.published < n + 1 && Date.now() < deadline) await r.drainOnce();
        const end = Date.now();
        const published = r.stats.published - 1;
        if (published < n) throw new Error(`relay published ${published}/${n} in time`);
        const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(ctx.schema, 'outbox')}`.execute(ctx.database.db);
        if (Number(rows[0]?.n) !== 0) throw new Error(`relay published ${published} rows but ${rows[0]?.n} are still in the outbox`);
        return { items: n, seconds: (end - started) / 1_000, correct: null, error: null };
      } finally {
        await r.stop();
      }
    },
  };
}

/** kafkajs producing the same N (`ctx.messages`) messages directly (same guarantees: idempotent, one in flight, acks all). */
export function direct(batchSize = 500): Variant {
  return {
    name: `kafkajs producer direct (batch ${batchSize})`,
    group: 'produce',
    run: async (ctx) => {
      const n = ctx.messages;
      const producer = testKafka(ctx.brokers, 'bench-direct').producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      const started = Date.now();
      for (let i = 0; i < n; i += batchSize) {
        const messages = Array.from({ length: Math.min(batchSize, n - i) }, (_, k) => ({ key: `cmp-${(i + k) % 50}`, value: payload(i + k), headers: { 'event-id': `d${i + k}` } }));
        await producer.send({ topic: ctx.alertsTopic, acks: -1, messages });
      }
      const end = Date.now();
      await producer.disconnect();
      return { items: n, seconds: (end - started) / 1_000, correct: null, error: null };
    },
  };
}

/** The variant a {@link ChildVariantSpec} names, run in this process. */
export function variantOf(spec: ChildVariantSpec): Variant {
  return spec.kind === 'relay' ? relay(spec.batchSize, spec.client) : effectively(spec.mode, spec.batchSize, undefined, spec.client);
}

/** What the client comparison compares, the same for both clients. */
const comparedWhat = (spec: ChildVariantSpec): string =>
  spec.kind === 'relay' ? `relay: outbox → Kafka (batch ${spec.batchSize})` : spec.mode === 'event' ? 'effectively, per-event mode' : `effectively, batch mode (${spec.batchSize})`;

/**
 * The client comparison: `spec` run in a child process under `node` (a Node.js ≥ 22.22, which
 * @platformatic/kafka needs; both clients run under it, so the comparison is of the clients
 * alone), one child per run (bench/client-child.ts), on the parent's topic, schema and broker.
 */
export function inChild(spec: ChildVariantSpec, node: { binary: string; version: string }): Variant {
  const what = comparedWhat(spec);
  return {
    name: `clients: ${what}, ${spec.client} (Node ${node.version})`,
    group: spec.kind === 'relay' ? 'produce' : 'consume',
    ...(spec.kind === 'consumer' && spec.mode === 'event' ? { slow: true } : {}),
    comparison: { client: spec.client, what, node: node.version },
    run: async (ctx) => {
      const { database: _database, lastOffsets, ...rest } = ctx;
      const context = JSON.stringify({ ...rest, lastOffsets: [...lastOffsets] });
      const child = spawn(node.binary, ['--import', 'tsx', path.join(__dirname, 'client-child.ts')], {
        env: { ...process.env, BENCH_VARIANT: JSON.stringify(spec) },
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      child.stdin.end(context);
      let result: Measurement | undefined;
      createInterface({ input: child.stdout }).on('line', (line) => {
        if (line.startsWith('measurement ')) result = JSON.parse(line.slice('measurement '.length)) as Measurement;
      });
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      if (code !== 0 || result === undefined) throw new Error(`${what} on ${spec.client} (child under Node ${node.version}) exited ${code} without a measurement`);
      return result;
    },
  };
}
