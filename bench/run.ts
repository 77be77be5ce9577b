// npm run bench -- [--events 10000] [--duplicate-rate 0.2] [--partitions 6] [--runs 3] [--slow-runs 1]
//                  [--concurrency 1] [--relay-rows 10000] [--only name-substring] [--timeout 300]
//                  [--latency-samples 50] [--latency-runs 3]
//                  [--writers 1,8] [--writer-seconds 1.5] [--writer-runs 3]
//                  [--table-rows 200000] [--table-batch 500] [--table-timeout 120] [--table-modes delete,mark-published,delete-pinned]
// Produces one stream of ad-spend events (with retried copies) and runs every variant over the
// same topic, each from an empty state, `--runs` times (`--slow-runs` for the variants with one
// transaction per message, which take minutes at this size); the producer variants (relay vs
// kafkajs direct) alternate run by run. Then three sections, each on schemas of its own:
// `latency` (bench/latency.ts), `writers` (bench/writers.ts), `table` (bench/outbox-table.ts,
// Postgres only; also `npm run bench:table`). `--only x` keeps the variants whose name contains x
// and the sections whose name contains x (`--only latency`, `--only writers`, `--only table`).
// Writes bench/results/latest.{json,md,svg}.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { createTestSchema, createTopics, seededRandom, startKafka, startPostgres, testKafka, type RunningKafka, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { generateScenario, toMessage } from '../examples/ad-spend/src/generator';
import { createAdSpendTables, saveGroundTruth } from '../examples/ad-spend/src/store';
import { runLatencyBench } from './latency';
import { DEFAULT_TABLE_MODES, runTableBench, TABLE_MODES, type TableMode } from './outbox-table';
import { markdown, summarise, svg, withRatios, type BenchReport, type VariantResult } from './report';
import { direct, effectively, naive, rawBatched, relay, type BenchContext, type Measurement, type Variant } from './variants';
import { runWriterBench } from './writers';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '10000' },
    'duplicate-rate': { type: 'string', default: '0.2' },
    partitions: { type: 'string', default: '6' },
    campaigns: { type: 'string', default: '50' },
    runs: { type: 'string', default: '3' },
    'slow-runs': { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '1' },
    'relay-rows': { type: 'string', default: '10000' },
    only: { type: 'string' },
    timeout: { type: 'string', default: '300' },
    'latency-samples': { type: 'string', default: '50' },
    'latency-runs': { type: 'string', default: '3' },
    writers: { type: 'string', default: '1,8' },
    'writer-seconds': { type: 'string', default: '1.5' },
    'writer-runs': { type: 'string', default: '3' },
    'table-rows': { type: 'string', default: '200000' },
    'table-batch': { type: 'string', default: '500' },
    'table-timeout': { type: 'string', default: '120' },
    'table-modes': { type: 'string', default: DEFAULT_TABLE_MODES.join(',') },
  },
});
const say = (line: string): void => void process.stderr.write(`[bench] ${line}\n`);
const selected = (name: string): boolean => args.only === undefined || name.includes(args.only);
const tableModes = (args['table-modes'] ?? '').split(',').map((m) => m.trim()) as TableMode[];
for (const m of tableModes) if (!TABLE_MODES.includes(m)) throw new Error(`unknown --table-modes entry ${m}; choose from ${TABLE_MODES.join(', ')}`);

async function main(state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema }): Promise<void> {
  const relayRows = Number(args['relay-rows']);
  const variants: Variant[] = [rawBatched, naive, effectively('event'), effectively('batch', 100), effectively('batch', 500), effectively('batch', 2000), direct(relayRows), relay(relayRows)].filter((v) => selected(v.name));
  const needKafka = variants.length > 0 || selected('latency');
  say(needKafka ? 'starting Kafka and Postgres …' : 'starting Postgres …');
  [state.kafka, state.postgres] = await Promise.all([needKafka ? startKafka() : undefined, startPostgres()]);
  const databaseUrl = state.postgres.url;
  const started = Date.now();
  const { results, messages } = variants.length > 0 ? await runVariants(state, variants) : { results: [], messages: 0 };
  if (variants.length > 0) say(`consumer and producer variants took ${((Date.now() - started) / 1_000).toFixed(0)} s`);
  const report: BenchReport = {
    date: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      kafka: state.kafka === undefined ? 'not started' : `${state.kafka.source}${state.kafka.version === undefined ? '' : ` ${state.kafka.version}`}`,
      postgres: state.postgres.source,
    },
    settings: {
      events: Number(args.events),
      messages,
      duplicateRate: Number(args['duplicate-rate']),
      partitions: Number(args.partitions),
      runs: Number(args.runs),
      slowRuns: Number(args['slow-runs']),
      partitionsConsumedConcurrently: Number(args.concurrency),
      relayRows,
    },
    results: withRatios(results),
  };
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    const result = await fn();
    say(`${name} took ${((Date.now() - t) / 1_000).toFixed(0)} s`);
    return result;
  };
  if (selected('latency')) {
    const kafka = state.kafka as RunningKafka;
    report.latency = await timed('latency', () => runLatencyBench({ brokers: kafka.brokers, databaseUrl, samples: Number(args['latency-samples']), runs: Number(args['latency-runs']), gapMs: [100, 200], sampleTimeoutMs: 10_000, say }));
  }
  if (selected('writers')) {
    const writers = (args.writers ?? '').split(',').map(Number);
    if (!writers.every((n) => Number.isInteger(n) && n >= 1 && n <= 100)) throw new Error(`--writers takes counts of connections, e.g. 1,8; got ${args.writers}`);
    report.writers = await timed('writers', () => runWriterBench(databaseUrl, { writers, seconds: Number(args['writer-seconds']), warmupSeconds: 0.5, runs: Number(args['writer-runs']), say }));
  }
  if (selected('table')) {
    report.table = await timed('table', () => runTableBench(databaseUrl, { rows: Number(args['table-rows']), batchSize: Number(args['table-batch']), timeoutMs: Number(args['table-timeout']) * 1_000, modes: tableModes, say }));
  }
  const dir = path.join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const md = markdown(report);
  writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(path.join(dir, 'latest.md'), md);
  writeFileSync(path.join(dir, 'latest.svg'), svg(report));
  process.stdout.write(`\n${md}`);
  say(`wrote ${path.relative(process.cwd(), dir)}/latest.{json,md,svg}`);
}

/** The consumer and producer variants over one generated stream. */
async function runVariants(state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema }, variants: Variant[]): Promise<{ results: VariantResult[]; messages: number }> {
  if (state.kafka === undefined || state.postgres === undefined) throw new Error('Kafka and Postgres must be running');
  const schema = (state.schema = await createTestSchema(state.postgres.url, 'bench', { max: 10 }));
  await createAdSpendTables(schema.db, schema.schema);
  await sql`CREATE TABLE ${sql.id(schema.schema, 'bench_seen')} (event_id text PRIMARY KEY)`.execute(schema.db);
  const scenario = generateScenario({ events: Number(args.events), campaigns: Number(args.campaigns), duplicateRate: Number(args['duplicate-rate']), random: seededRandom(2026) });
  await saveGroundTruth(schema.db, schema.schema, scenario.truth);
  const kafka = testKafka(state.kafka.brokers);
  const [topic, alertsTopic] = await createTopics(kafka, [{ prefix: 'bench_spend', partitions: Number(args.partitions) }, { prefix: 'bench_alerts', partitions: 3 }]);
  const producer = kafka.producer();
  await producer.connect();
  for (let i = 0; i < scenario.stream.length; i += 1_000) {
    await producer.send({ topic: topic as string, acks: -1, messages: scenario.stream.slice(i, i + 1_000).map((s) => toMessage(s.event)) });
  }
  await producer.disconnect();
  say(`topic ${topic}: ${scenario.truth.messages} messages (${scenario.truth.uniqueEvents} unique, ${scenario.truth.duplicates} retried copies)`);

  const ctx: BenchContext = {
    brokers: state.kafka.brokers,
    databaseUrl: state.postgres.url,
    database: schema.database,
    schema: schema.schema,
    topic: topic as string,
    alertsTopic: alertsTopic as string,
    messages: scenario.truth.messages,
    truth: scenario.truth,
    concurrency: Number(args.concurrency),
    timeoutMs: Number(args.timeout) * 1_000,
  };
  const results: VariantResult[] = [];
  const measure = async (variant: Variant, i: number): Promise<Measurement> => {
    const m = await variant.run(ctx);
    say(`${variant.name} run ${i}: ${Math.round(m.items / m.seconds)} events/s (${m.seconds.toFixed(2)} s)${m.correct === false ? `, totals off by ${((m.error ?? 0) * 100).toFixed(1)} %` : ''}`);
    return m;
  };
  for (const variant of variants.filter((v) => v.group === 'consume')) {
    const runs = [];
    const n = Number(variant.slow === true ? args['slow-runs'] : args.runs);
    for (let i = 1; i <= n; i++) runs.push(await measure(variant, i));
    results.push(summarise(variant.name, variant.group, runs));
  }
  // Producers side by side: direct, relay, direct, relay, …
  const producers = variants.filter((v) => v.group === 'produce');
  const produced = new Map<Variant, Measurement[]>(producers.map((v) => [v, []]));
  for (let i = 1; i <= Number(args.runs); i++) {
    for (const variant of producers) produced.get(variant)?.push(await measure(variant, i));
  }
  for (const variant of producers) results.push(summarise(variant.name, variant.group, produced.get(variant) ?? []));
  return { results, messages: scenario.truth.messages };
}

const state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema } = {};
let code = 0;
const interrupt = (): void => {
  say('interrupted; stopping services');
  void Promise.allSettled([state.kafka?.stop(), state.postgres?.stop()]).finally(() => process.exit(130));
};
process.once('SIGINT', interrupt);
process.once('SIGTERM', interrupt);
main(state)
  .catch((error: unknown) => {
    say(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    code = 1;
  })
  .finally(async () => {
    await state.schema?.drop().catch(() => undefined);
    await state.kafka?.stop().catch(() => undefined);
    await state.postgres?.stop().catch(() => undefined);
    process.exit(code);
  });
