// npm run bench:event-floor -- [--events 1500] [--lanes 4] [--runs 5] [--arms naive,floor,fused,effectively]
// How far per-event mode is from the floor its design allows, without Kafka. Three arms do the same
// work per event (claim or check the id, one upsert into a spend table, commit), each on --lanes
// partitions at once with one connection each, --events events per lane, alternating round by round:
//  - naive: BEGIN, SELECT the id, upsert, INSERT the id, COMMIT (5 round trips);
//  - claim-first floor: BEGIN and a bare INSERT … ON CONFLICT DO NOTHING of the id in one simple
//    query, upsert, COMMIT (3 round trips, no fence, no attempt bookkeeping, no timeouts);
//  - fused floor: the claim-first floor with each COMMIT sent with the next event's BEGIN and claim
//    (one simple query, 2 round trips per event): what folding COMMIT into the next claim would reach;
//  - effectively per-event mode: IdempotentConsumer fed from memory through its `client` seam
//    (bench/memory-client.ts), the upsert in its handler (2 round trips: the previous COMMIT with BEGIN and the claim, upsert).
// Reported: events/s (median, min–max), the median of per-round ratios, and this process's CPU per
// event. The gap between the floor and per-event mode is the consumer's own cost per event: what the
// claim statement does beyond an insert (timeouts, fence lock, attempt state) and the work in Node.
// Postgres from DATABASE_URL, else a private embedded one. Writes bench/results/event-floor.{json,md}.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CompiledQuery, sql } from 'kysely';
import { Client } from 'pg';
import { silentLogger } from '@effectively/core';
import { IdempotentConsumer } from '@effectively/kafka';
import { createTestSchema, startPostgres, type TestSchema } from '@effectively/testkit';
import { memoryFeed, rawMessage } from './memory-client';
import { fmtInt, fmtRatio, median } from './stats';
import { runBench, stopServices, type BenchServices } from './main';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '1500' },
    lanes: { type: 'string', default: '4' },
    runs: { type: 'string', default: '5' },
    arms: { type: 'string', default: 'naive,floor,fused,effectively' },
  },
});
const perLane = Number(args.events);
const lanes = Number(args.lanes);
const runs = Number(args.runs);
const say = (line: string): void => void process.stderr.write(`[event-floor] ${line}\n`);

type Arm = 'naive' | 'floor' | 'fused' | 'effectively';
const ALL_ARMS: readonly Arm[] = ['naive', 'floor', 'fused', 'effectively'];
const ARMS = (args.arms as string).split(',').filter((a): a is Arm => (ALL_ARMS as readonly string[]).includes(a));
if (ARMS.length === 0) throw new Error(`--arms: one or more of ${ALL_ARMS.join(', ')}`);
interface Timed {
  rate: number;
  cpuMicros: number;
  /** Of `cpuMicros`, in the kernel (socket writes and reads). */
  systemMicros: number;
}

/** Times `work` (all lanes at once): events/s over all lanes and this process's CPU per event. */
async function timed(work: () => Promise<void>): Promise<Timed> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await work();
  const seconds = (performance.now() - started) / 1_000;
  const used = process.cpuUsage(cpu);
  const events = perLane * lanes;
  return { rate: events / seconds, cpuMicros: (used.user + used.system) / events, systemMicros: used.system / events };
}

/** The naive and floor arms: one pg client per lane, statements as written above. */
async function rawArm(url: string, schema: string, arm: Exclude<Arm, 'effectively'>, round: number): Promise<Timed> {
  const t = (name: string): string => `"${schema}"."${name}"`;
  const upsert = `INSERT INTO ${t('spend')} (k, v) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET v = ${t('spend')}.v + 1`;
  const clients = await Promise.all(
    Array.from({ length: lanes }, async () => {
      const c = new Client({ connectionString: url });
      await c.connect();
      return c;
    }),
  );
  try {
    return await timed(async () => {
      await Promise.all(
        clients.map(async (c, lane) => {
          for (let i = 0; i < perLane; i++) {
            const id = `${arm}-${round}-${lane}-${i}`;
            const key = `k${lane}-${i % 50}`;
            if (arm === 'naive') {
              await c.query('BEGIN');
              const seen = await c.query({ name: 'check', text: `SELECT 1 FROM ${t('seen')} WHERE id = $1`, values: [id] });
              if (seen.rows.length === 0) {
                await c.query({ name: 'upsert', text: upsert, values: [key] });
                await c.query({ name: 'remember', text: `INSERT INTO ${t('seen')} (id) VALUES ($1)`, values: [id] });
              }
              await c.query('COMMIT');
            } else if (arm === 'floor') {
              // The id is ours (no quote in it): BEGIN and the claim in one simple query, one round trip.
              await c.query(`BEGIN; INSERT INTO ${t('claimed')} (id) VALUES ('${id}') ON CONFLICT DO NOTHING`);
              await c.query({ name: 'upsert', text: upsert, values: [key] });
              await c.query('COMMIT');
            } else {
              const claim = `BEGIN; INSERT INTO ${t('claimed')} (id) VALUES ('${id}') ON CONFLICT DO NOTHING`;
              await c.query(i === 0 ? claim : `COMMIT; ${claim}`);
              await c.query({ name: 'upsert', text: upsert, values: [key] });
              if (i === perLane - 1) await c.query('COMMIT');
            }
          }
        }),
      );
    });
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
}

/** Per-event mode on `lanes` partitions fed from memory; the handler runs the same upsert in `trx`. */
async function effectivelyArm(ts: TestSchema, round: number): Promise<Timed> {
  const partitions = Array.from({ length: lanes }, (_, p) =>
    Array.from({ length: perLane }, (_, i) => rawMessage('floor', p, i, `eff-${round}-${p}-${i}`, JSON.stringify({ k: `k${p}-${i % 50}` }))),
  );
  const feed = memoryFeed('floor', partitions);
  // The same statement text as the other arms, through Kysely's thinnest path (no query building per event).
  const upsert = `INSERT INTO "${ts.schema}"."spend" (k, v) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET v = "${ts.schema}"."spend".v + 1`;
  const consumer = new IdempotentConsumer<{ k: string }>({
    brokers: ['unused:9092'],
    groupId: `floor-${round}`,
    topics: ['floor'],
    db: ts.db,
    schema: ts.schema,
    mode: 'event',
    partitionsConsumedConcurrently: lanes,
    handler: async (event, ctx) => {
      await ctx.trx.executeQuery(CompiledQuery.raw(upsert, [event.value.k]));
    },
    logger: silentLogger(),
    client: feed.client,
    rotateGenerations: false,
  });
  // Timed from the first batch handed over (start-up, fences and the BEGIN-fold probe are not per event).
  const cpu = process.cpuUsage();
  await consumer.start();
  await feed.finished;
  const seconds = (Date.now() - feed.startedAt()) / 1_000;
  const used = process.cpuUsage(cpu);
  await consumer.stop();
  const events = perLane * lanes;
  if (consumer.stats.processed !== events) throw new Error(`per-event mode applied ${consumer.stats.processed} of ${events} events`);
  return { rate: events / seconds, cpuMicros: (used.user + used.system) / events, systemMicros: used.system / events };
}

async function main(state: BenchServices): Promise<void> {
  state.postgres = await startPostgres();
  const ts = await createTestSchema(state.postgres.url, 'event_floor', { max: lanes + 4 });
  state.schema = ts;
  const t = (name: string) => sql.id(ts.schema, name);
  await sql`CREATE TABLE ${t('spend')} (k text PRIMARY KEY, v bigint NOT NULL)`.execute(ts.db);
  await sql`CREATE TABLE ${t('seen')} (id text PRIMARY KEY)`.execute(ts.db);
  await sql`CREATE TABLE ${t('claimed')} (id text PRIMARY KEY)`.execute(ts.db);
  const results: Record<Arm, Timed[]> = { naive: [], floor: [], fused: [], effectively: [] };
  const load = os.loadavg();
  // Round 0 warms every arm up (connections, prepared statements, JIT) and is not reported.
  for (let round = 0; round <= runs; round++) {
    for (const arm of ARMS) {
      const r = arm === 'effectively' ? await effectivelyArm(ts, round) : await rawArm(state.postgres.url, ts.schema, arm, round);
      say(`round ${round} ${arm}: ${fmtInt(r.rate)} events/s, ${fmtInt(r.cpuMicros)} µs of this process's CPU per event (${fmtInt(r.systemMicros)} in the kernel)`);
      if (round > 0) results[arm].push(r);
    }
  }
  const ratio = (a: Arm, b: Arm): { median: number; min: number; max: number } => {
    const rs = results[a].flatMap((x, i) => (results[b][i] === undefined ? [] : [x.rate / (results[b][i] as Timed).rate]));
    if (rs.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN };
    return { median: median(rs), min: Math.min(...rs), max: Math.max(...rs) };
  };
  const rows = ARMS.map((arm) => {
    const rates = results[arm].map((r) => r.rate);
    return { arm, median: median(rates), min: Math.min(...rates), max: Math.max(...rates), cpuMicros: median(results[arm].map((r) => r.cpuMicros)), systemMicros: median(results[arm].map((r) => r.systemMicros)) };
  });
  const ratios = { floorVsNaive: ratio('floor', 'naive'), fusedVsNaive: ratio('fused', 'naive'), effectivelyVsNaive: ratio('effectively', 'naive'), effectivelyVsFloor: ratio('effectively', 'floor') };
  const command = `npm run bench:event-floor -- --events ${perLane} --lanes ${lanes} --runs ${runs}`;
  const report = { command, at: new Date().toISOString(), postgres: state.postgres.source, cpus: os.cpus().length, loadAtStart: load, loadAtEnd: os.loadavg(), rows, ratios };
  const dir = path.join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'event-floor.json'), JSON.stringify(report, null, 2) + '\n');
  const name: Record<Arm, string> = {
    naive: 'naive: BEGIN, check id, upsert, insert id, COMMIT (5 round trips)',
    floor: 'claim-first floor: BEGIN + bare claim, upsert, COMMIT (3 round trips)',
    fused: 'fused floor: COMMIT + next BEGIN + bare claim, upsert (2 round trips)',
    effectively: 'effectively per-event mode, fed from memory (2 round trips: the previous COMMIT with BEGIN and the claim, upsert)',
  };
  const f = (r: { median: number; min: number; max: number }): string => `${fmtRatio(r.median)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})`;
  const md = [
    `# Per-event mode against its floor (no Kafka)`,
    ``,
    `Command: \`${command}\`; Postgres ${state.postgres.source}; ${report.at}; ${report.cpus} CPUs, load ${load.map((x) => x.toFixed(1)).join(' ')} at the start, ${report.loadAtEnd.map((x) => x.toFixed(1)).join(' ')} at the end.`,
    `${lanes} lanes at once, ${fmtInt(perLane)} events each, ${runs} rounds after a warm-up round; arms alternate within each round.`,
    ``,
    `| arm | events/s (median) | min–max | CPU of this process per event (µs, median) | of it in the kernel |`,
    `|---|---:|---:|---:|---:|`,
    ...rows.map((r) => `| ${name[r.arm]} | ${fmtInt(r.median)} | ${fmtInt(r.min)}–${fmtInt(r.max)} | ${fmtInt(r.cpuMicros)} | ${fmtInt(r.systemMicros)} |`),
    ``,
    `Median of per-round ratios (min–max): floor / naive ${f(ratios.floorVsNaive)}; fused floor / naive ${f(ratios.fusedVsNaive)}; per-event mode / naive ${f(ratios.effectivelyVsNaive)}; per-event mode / floor ${f(ratios.effectivelyVsFloor)}.`,
  ];
  writeFileSync(path.join(dir, 'event-floor.md'), md.join('\n') + '\n');
  process.stdout.write(md.join('\n') + '\n');
}

const state: BenchServices = {};
runBench(
  () => main(state),
  () => stopServices(state),
  say,
);
