// Idle-to-delivered latency: one message at a time, open loop (samples fired on a fixed schedule,
// gaps drawn uniformly from 100–200 ms, whether or not the previous one has arrived), each timed
// until a kafkajs consumer of the topic receives it (matched by its `event-id` header):
//   - relay, LISTEN: an idle relay started with start() (LISTEN on, poll 500 ms as fallback);
//     clock starts when COMMIT of a transaction with one `outbox.publish` returns;
//   - relay, poll only: the same relay with `listen: false` (pollIntervalMs 500, the default);
//   - kafkajs direct: `producer.send` of the same message (idempotent, one in flight, acks -1);
//     clock starts when send is called.
// The three variants run in turn within each run (order rotating between runs); percentiles are
// over all samples of all runs, plus the median of the per-run p50s.
import { createOutbox, silentLogger, type Database } from '@effectively/core';
import { OutboxRelay } from '@effectively/relay';
import { createTestSchema, createTopics, seededRandom, uniqueName } from '@effectively/testkit';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import { fmtMs, median, now, percentile, round, sleep } from './stats';

export const LATENCY_VARIANTS = ['kafkajs producer direct (send → received)', 'relay, LISTEN/NOTIFY (commit → received)', 'relay, poll only 500 ms (commit → received)'] as const;
export type LatencyVariant = (typeof LATENCY_VARIANTS)[number];

export interface LatencyOptions {
  brokers: string[];
  databaseUrl: string;
  samples: number;
  runs: number;
  /** Gap between samples, drawn uniformly from [min, max] ms. */
  gapMs: [number, number];
  /** Longest wait for one message. */
  sampleTimeoutMs: number;
  say: (line: string) => void;
}

export interface LatencyRun {
  run: number;
  samples: number;
  lost: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  /** Writer side, ms (p50): BEGIN→COMMIT returned (relay) or send→ack (direct). */
  writerP50: number;
}

export interface LatencyResult {
  name: LatencyVariant;
  samples: number;
  lost: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  medianRunP50: number;
  writerP50: number;
  runs: LatencyRun[];
  /** Every sample, ms, in run order. */
  latenciesMs: number[];
}

export interface LatencyReport {
  settings: { samples: number; runs: number; gapMs: string; partitions: number; pollIntervalMs: number };
  results: LatencyResult[];
}

const PARTITIONS = 3;
const VALUE = JSON.stringify({ type: 'campaign.budget_exceeded', campaign_id: 'cmp-1', day: '2026-01-05', note: 'x'.repeat(60) });

/** Arrival times of messages by event id, for samples to wait on. */
class Arrivals {
  private readonly waiting = new Map<string, (t: number) => void>();
  private readonly early = new Map<string, number>();

  arrived(id: string, t: number): void {
    const resolve = this.waiting.get(id);
    if (resolve === undefined) this.early.set(id, t);
    else {
      this.waiting.delete(id);
      resolve(t);
    }
  }

  /** Resolves with the arrival time of `id`, or undefined after `timeoutMs`. Call before sending. */
  expect(id: string, timeoutMs: number): Promise<number | undefined> {
    const t = this.early.get(id);
    if (t !== undefined) {
      this.early.delete(id);
      return Promise.resolve(t);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.waiting.set(id, (at) => {
        clearTimeout(timer);
        resolve(at);
      });
    });
  }
}

interface Sender {
  /** Sends one message with event id `id`; returns when the clock starts (commit returned / send called) and the writer-side duration. */
  send(id: string, key: string): Promise<{ t0: number; writerMs: number; acked: Promise<void> }>;
  stop(): Promise<void>;
}

async function directSender(kafka: Kafka, topic: string): Promise<Sender> {
  const producer: Producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  return {
    send: async (id, key) => {
      const t0 = now();
      const acked = producer.send({ topic, acks: -1, messages: [{ key, value: VALUE, headers: { 'event-id': id } }] }).then(() => undefined);
      return { t0, writerMs: Number.NaN, acked };
    },
    stop: () => producer.disconnect(),
  };
}

async function relaySender(o: LatencyOptions, database: Database, schema: string, topic: string, listen: boolean): Promise<Sender> {
  const outbox = createOutbox({ schema });
  const relay = new OutboxRelay({ brokers: o.brokers, db: database.db, databaseUrl: o.databaseUrl, schema, listen, logger: silentLogger() });
  await relay.start();
  return {
    send: async (id, key) => {
      const begun = now();
      await database.db.transaction().execute((trx) => outbox.publish(trx, { topic, key, value: VALUE, eventId: id }));
      const t0 = now();
      return { t0, writerMs: t0 - begun, acked: Promise.resolve() };
    },
    stop: () => relay.stop(),
  };
}

export async function runLatencyBench(o: LatencyOptions): Promise<LatencyReport> {
  const kafka = new Kafka({ clientId: 'bench-latency', brokers: o.brokers, logLevel: logLevel.NOTHING });
  const [topic] = (await createTopics(kafka, [{ prefix: 'bench_latency', partitions: PARTITIONS }])) as [string];
  const ts = await createTestSchema(o.databaseUrl, 'bench_latency', { max: 10 });
  const arrivals = new Arrivals();
  const consumer: Consumer = kafka.consumer({ groupId: uniqueName('bench_latency'), sessionTimeout: 10_000 });
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const t = now();
        const id = message.headers?.['event-id']?.toString();
        if (id !== undefined) arrivals.arrived(id, t);
      },
    });
    // The consumer is ready once a message gets through.
    {
      const warm = await directSender(kafka, topic);
      const got = arrivals.expect('warm-consumer', 60_000);
      await (await warm.send('warm-consumer', 'warm')).acked;
      const ok = await got;
      await warm.stop();
      if (ok === undefined) throw new Error('the latency consumer received nothing within 60 s');
    }

    const perVariant = new Map<LatencyVariant, { runs: LatencyRun[]; all: number[]; writer: number[] }>(LATENCY_VARIANTS.map((v) => [v, { runs: [], all: [], writer: [] }]));
    for (let run = 1; run <= o.runs; run++) {
      const order = LATENCY_VARIANTS.map((_, i) => LATENCY_VARIANTS[(i + run - 1) % LATENCY_VARIANTS.length] as LatencyVariant);
      for (const variant of order) {
        const tag = `${LATENCY_VARIANTS.indexOf(variant)}-${run}`;
        const sender = variant.startsWith('kafkajs') ? await directSender(kafka, topic) : await relaySender(o, ts.database, ts.schema, topic, variant.includes('LISTEN'));
        try {
          // Warm up (producer connected, lanes leased), then let the relay go idle (past a poll interval).
          const warmId = `warm-${tag}`;
          const got = arrivals.expect(warmId, 30_000);
          await (await sender.send(warmId, 'warm')).acked;
          if ((await got) === undefined) throw new Error(`${variant}: warm-up message not received within 30 s`);
          await sleep(700);

          const random = seededRandom(run);
          const samples: Array<Promise<{ latency: number | undefined; writerMs: number }>> = [];
          let next = now();
          for (let i = 0; i < o.samples; i++) {
            await sleep(next - now());
            const id = `lat-${tag}-${i}`;
            const arrival = arrivals.expect(id, o.sampleTimeoutMs);
            samples.push(
              sender.send(id, `acct-${i % 1000}`).then(async ({ t0, writerMs, acked }) => {
                const ackedAt = acked.then(() => now());
                const at = await arrival;
                const ackMs = (await ackedAt) - t0;
                return { latency: at === undefined ? undefined : at - t0, writerMs: Number.isNaN(writerMs) ? ackMs : writerMs };
              }),
            );
            next += o.gapMs[0] + random() * (o.gapMs[1] - o.gapMs[0]);
          }
          const measured = await Promise.all(samples);
          const latencies = measured.flatMap((m) => (m.latency === undefined ? [] : [m.latency]));
          const writer = measured.map((m) => m.writerMs);
          const r: LatencyRun = {
            run,
            samples: latencies.length,
            lost: measured.length - latencies.length,
            p50: round(percentile(latencies, 50), 2),
            p95: round(percentile(latencies, 95), 2),
            p99: round(percentile(latencies, 99), 2),
            max: round(Math.max(...latencies), 2),
            writerP50: round(percentile(writer, 50), 2),
          };
          const acc = perVariant.get(variant) as { runs: LatencyRun[]; all: number[]; writer: number[] };
          acc.runs.push(r);
          acc.all.push(...latencies);
          acc.writer.push(...writer);
          o.say(`latency: run ${run}, ${variant}: p50 ${fmtMs(r.p50)} ms, p95 ${fmtMs(r.p95)} ms, p99 ${fmtMs(r.p99)} ms, max ${fmtMs(r.max)} ms${r.lost > 0 ? `, ${r.lost} LOST` : ''}`);
        } finally {
          await sender.stop();
        }
      }
    }
    return {
      settings: { samples: o.samples, runs: o.runs, gapMs: `${o.gapMs[0]}–${o.gapMs[1]}`, partitions: PARTITIONS, pollIntervalMs: 500 },
      results: LATENCY_VARIANTS.map((name) => {
        const acc = perVariant.get(name) as { runs: LatencyRun[]; all: number[]; writer: number[] };
        return {
          name,
          samples: acc.all.length,
          lost: acc.runs.reduce((a, r) => a + r.lost, 0),
          p50: round(percentile(acc.all, 50), 2),
          p95: round(percentile(acc.all, 95), 2),
          p99: round(percentile(acc.all, 99), 2),
          max: round(Math.max(...acc.all), 2),
          medianRunP50: round(median(acc.runs.map((r) => r.p50)), 2),
          writerP50: round(percentile(acc.writer, 50), 2),
          runs: acc.runs,
          latenciesMs: acc.all.map((x) => round(x, 2)),
        };
      }),
    };
  } finally {
    await consumer.disconnect().catch(() => undefined);
    await ts.drop().catch(() => undefined);
  }
}

export function latencyMarkdown(l: LatencyReport): string {
  const s = l.settings;
  const lines = [
    '### Idle-to-delivered latency: one message at a time until a kafkajs consumer receives it',
    '',
    `${s.samples} samples per run × ${s.runs} runs per variant, fired every ${s.gapMs} ms (open loop), topic with ${s.partitions} partitions; variants in turn within each run. ` +
      'Relay: clock starts when COMMIT returns; direct: when `producer.send` is called.',
    '',
    '| variant | p50 ms | p95 ms | p99 ms | max ms | median of run p50s | samples (lost) | writer side p50 ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of l.results) {
    lines.push(`| ${r.name} | ${fmtMs(r.p50)} | ${fmtMs(r.p95)} | ${fmtMs(r.p99)} | ${fmtMs(r.max)} | ${fmtMs(r.medianRunP50)} | ${r.samples} (${r.lost}) | ${fmtMs(r.writerP50)} |`);
  }
  lines.push('', 'Writer side: BEGIN → COMMIT returned for the relay rows (one `publish`, lane lock + NOTIFY), `send` → ack for kafkajs.');
  return lines.join('\n') + '\n';
}
