// npm run bench -- [--events 10000] [--duplicate-rate 0.2] [--partitions 6] [--runs 3] [--slow-runs 1]
//                  [--concurrency 1] [--relay-rows 10000] [--only name-substring] [--timeout 300]
// Produces one stream of ad-spend events (with retried copies) and runs every variant over the
// same topic, each from an empty state, `--runs` times (`--slow-runs` for the variants with one
// transaction per message, which take minutes at this size). Writes bench/results/latest.{json,md,svg}.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { createTestSchema, createTopics, seededRandom, startKafka, startPostgres, testKafka, type RunningKafka, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { generateScenario, toMessage } from '../examples/ad-spend/src/generator';
import { createAdSpendTables, saveGroundTruth } from '../examples/ad-spend/src/store';
import { markdown, summarise, svg, withRatios, type BenchReport, type VariantResult } from './report';
import { direct, effectively, naive, rawBatched, relay, type BenchContext, type Variant } from './variants';

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
  },
});
const say = (line: string): void => void process.stderr.write(`[bench] ${line}\n`);

async function main(state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema }): Promise<void> {
  say('starting Kafka and Postgres …');
  [state.kafka, state.postgres] = await Promise.all([startKafka(), startPostgres()]);
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
  const relayRows = Number(args['relay-rows']);
  const variants: Variant[] = [rawBatched, naive, effectively('event'), effectively('batch', 100), effectively('batch', 500), effectively('batch', 2000), direct(relayRows), relay(relayRows)].filter(
    (v) => args.only === undefined || v.name.includes(args.only),
  );
  const results: VariantResult[] = [];
  for (const variant of variants) {
    const runs = [];
    const n = Number(variant.slow === true ? args['slow-runs'] : args.runs);
    for (let i = 1; i <= n; i++) {
      const m = await variant.run(ctx);
      say(`${variant.name} run ${i}: ${Math.round(m.items / m.seconds)} events/s (${m.seconds.toFixed(2)} s)${m.correct === false ? `, totals off by ${((m.error ?? 0) * 100).toFixed(1)} %` : ''}`);
      runs.push(m);
    }
    results.push(summarise(variant.name, variant.group, runs));
  }
  const report: BenchReport = {
    date: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      kafka: `${state.kafka.source}${state.kafka.version === undefined ? '' : ` ${state.kafka.version}`}`,
      postgres: state.postgres.source,
    },
    settings: {
      events: scenario.truth.uniqueEvents,
      messages: scenario.truth.messages,
      duplicateRate: Number(args['duplicate-rate']),
      partitions: Number(args.partitions),
      runs: Number(args.runs),
      slowRuns: Number(args['slow-runs']),
      partitionsConsumedConcurrently: ctx.concurrency,
      relayRows,
    },
    results: withRatios(results),
  };
  const dir = path.join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const md = markdown(report);
  writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(path.join(dir, 'latest.md'), md);
  writeFileSync(path.join(dir, 'latest.svg'), svg(report));
  process.stdout.write(`\n${md}`);
  say(`wrote ${path.relative(process.cwd(), dir)}/latest.{json,md,svg}`);
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
