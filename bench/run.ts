// npm run bench -- [--events 300000] [--duplicate-rate 0.2] [--partitions 8] [--runs 3] [--min-seconds 2] [--scaling 1,2,4,8] [--processes 2]
//                  [--concurrency 4] [--relay-rows 10000] [--only name-substring] [--timeout 300]
//                  [--latency-samples 50] [--latency-runs 3]
//                  [--writers 1,8] [--writer-seconds 1.5] [--writer-runs 3]
//                  [--table-rows 200000] [--table-batch 500] [--table-timeout 120] [--table-modes delete,mark-published,delete-pinned]
//                  [--clients kafkajs,platformatic]
// Generates one stream of ad-spend events (with retried copies); topics hold prefixes of it. Each
// consumer variant gets one untimed warm-up run that sizes its topic so a timed run lasts at least
// --min-seconds (one transaction per message: at least 4,000 messages; the naive pattern and
// per-event mode share the larger of their topics); then --runs rounds, every variant once per
// round, so ratios compare neighbours in time (median and min-max of per-round ratios). The scaling curve: batch 500 and per-event mode
// at --scaling partitions at once, and --processes processes. The producer variants (relay vs
// kafkajs direct) alternate run by run, on one number of rows: --relay-rows to start, grown until the
// faster one's warm-up lasts --min-seconds. Then three sections, each on schemas of its own:
// `latency` (bench/latency.ts), `writers` (bench/writers.ts), `table` (bench/outbox-table.ts,
// Postgres only; also `npm run bench:table`). `--only x` keeps the variants whose name contains x
// and the sections whose name contains x (`--only latency`, `--only writers`, `--only table`); `--only x,y`: either.
// The client comparison (`--only clients`): the consumer (batch 500, per-event) and the relay on each
// of --clients, every run in a child process under Node 22 (scripts/node22.mjs installs it from the
// npm registry when this Node is older; @platformatic/kafka needs ≥ 22.22), kafkajs too, so the
// comparison is of the clients alone; same stream, topics, schema and broker as the rest of the run,
// runs alternating client by client (consumers of a pair on the same topic).
// Writes bench/results/latest.{json,md,svg}.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { createTestSchema, createTopics, seededRandom, startKafka, startPostgres, testKafka, type RunningKafka, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { dayOf, type SpendEvent } from '../examples/ad-spend/src/events';
import { generateScenario, toMessage, type GroundTruth } from '../examples/ad-spend/src/generator';
import { createAdSpendTables, saveGroundTruth } from '../examples/ad-spend/src/store';
import { runLatencyBench } from './latency';
import { DEFAULT_TABLE_MODES, runTableBench, TABLE_MODES, type TableMode } from './outbox-table';
import { markdown, summarise, svg, withRatios, type BenchReport, type VariantResult } from './report';
import { direct, effectively, effectivelyProcesses, inChild, naive, rawBatched, relay, type BenchClient, type BenchContext, type ChildVariantSpec, type Measurement, type Variant } from './variants';
import { runWriterBench } from './writers';
import { runBench, stopServices } from './main';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '300000' },
    'min-seconds': { type: 'string', default: '2' },
    scaling: { type: 'string', default: '1,2,4,8' },
    processes: { type: 'string', default: '2' },
    'duplicate-rate': { type: 'string', default: '0.2' },
    partitions: { type: 'string', default: '8' },
    campaigns: { type: 'string', default: '50' },
    runs: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '4' },
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
    clients: { type: 'string', default: 'kafkajs,platformatic' },
  },
});
const say = (line: string): void => void process.stderr.write(`[bench] ${line}\n`);
// --only a,b: any of the comma-separated substrings.
const selected = (name: string): boolean => args.only === undefined || args.only.split(',').some((part) => part !== '' && name.includes(part));
const tableModes = (args['table-modes'] ?? '').split(',').map((m) => m.trim()) as TableMode[];
for (const m of tableModes) if (!TABLE_MODES.includes(m)) throw new Error(`unknown --table-modes entry ${m}; choose from ${TABLE_MODES.join(', ')}`);
const clients = (args.clients ?? '').split(',').filter((c) => c !== '') as BenchClient[];
for (const c of clients) if (c !== 'kafkajs' && c !== 'platformatic') throw new Error(`unknown --clients entry ${c}; choose from kafkajs, platformatic`);

/** The client comparison: what runs on each client. */
const COMPARED: Array<(client: BenchClient) => ChildVariantSpec> = [
  (client) => ({ kind: 'consumer', mode: 'batch', batchSize: 500, client }),
  (client) => ({ kind: 'consumer', mode: 'event', batchSize: 500, client }),
  (client) => ({ kind: 'relay', batchSize: 500, client }),
];

/** A Node.js ≥ 22.22 for the client comparison: this one, or the one scripts/node22.mjs installs from the npm registry. */
function node22(): { binary: string; version: string } {
  const binary = execFileSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'node22.mjs'), '--print'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  return { binary, version: execFileSync(binary, ['--version'], { encoding: 'utf8' }).trim().replace(/^v/, '') };
}

async function main(state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema }): Promise<void> {
  const loadStart = os.loadavg();
  const relayRows = Number(args['relay-rows']);
  const scaling = (args.scaling ?? '').split(',').filter((x) => x !== '').map(Number);
  const processes = Number(args.processes);
  const variants: Variant[] = [
    rawBatched,
    naive,
    effectively('event'),
    effectively('batch', 100),
    effectively('batch', 500),
    effectively('batch', 2000),
    ...scaling.flatMap((c) => [effectively('batch', 500, c), effectively('event', 500, c)]),
    ...(processes > 1 ? [effectivelyProcesses('batch', 500, processes, Math.max(1, Math.floor(Math.max(...scaling, 2) / processes))), effectivelyProcesses('event', 500, processes, Math.max(1, Math.floor(Math.max(...scaling, 2) / processes)))] : []),
    direct(),
    relay(),
  ].filter((v) => selected(v.name));
  // The comparison's names do not depend on the Node that runs it: select first, then find that Node.
  const compared = COMPARED.flatMap((spec) => clients.map(spec)).filter((spec) => selected(`clients: ${inChild(spec, { binary: '', version: '' }).comparison?.what}, ${spec.client}`));
  if (compared.length > 0) {
    const node = node22();
    say(`client comparison under Node ${node.version} (${node.binary})`);
    variants.push(...compared.map((spec) => inChild(spec, node)));
  }
  const needKafka = variants.length > 0 || selected('latency');
  say(needKafka ? 'starting Kafka and Postgres …' : 'starting Postgres …');
  [state.kafka, state.postgres] = await Promise.all([needKafka ? startKafka() : undefined, startPostgres()]);
  const databaseUrl = state.postgres.url;
  const started = Date.now();
  const { results, messages } = variants.length > 0 ? await runVariants(state, variants, relayRows) : { results: [], messages: 0 };
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
      minSeconds: Number(args['min-seconds']),
      partitionsConsumedConcurrently: Number(args.concurrency),
      relayRowsStart: relayRows,
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
  report.machine.loadavg = { start: loadStart, end: os.loadavg() };
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
async function runVariants(state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema }, variants: Variant[], relayRows: number): Promise<{ results: VariantResult[]; messages: number }> {
  if (state.kafka === undefined || state.postgres === undefined) throw new Error('Kafka and Postgres must be running');
  const schema = (state.schema = await createTestSchema(state.postgres.url, 'bench', { max: 24 }));
  await createAdSpendTables(schema.db, schema.schema);
  await sql`CREATE TABLE ${sql.id(schema.schema, 'bench_seen')} (event_id text PRIMARY KEY)`.execute(schema.db);
  const scenario = generateScenario({ events: Number(args.events), campaigns: Number(args.campaigns), duplicateRate: Number(args['duplicate-rate']), random: seededRandom(2026) });
  await saveGroundTruth(schema.db, schema.schema, scenario.truth);
  const kafka = testKafka(state.kafka.brokers);
  const [alertsTopic] = await createTopics(kafka, [{ prefix: 'bench_alerts', partitions: 3 }]);
  const stream = scenario.stream.map((s) => s.event);
  say(`stream: ${scenario.truth.messages} messages (${scenario.truth.uniqueEvents} unique, ${scenario.truth.duplicates} retried copies); topics hold prefixes of it`);

  // Topics holding the first `size` messages of the stream, made when a variant first needs one.
  const tiers = new Map<number, Promise<Tier>>();
  const tier = (size: number): Promise<Tier> => {
    const n = Math.min(size, stream.length);
    let t = tiers.get(n);
    if (t === undefined) {
      t = (async () => {
        const [topic] = await createTopics(kafka, [{ prefix: `bench_spend_${n}`, partitions: Number(args.partitions) }]);
        const producer = kafka.producer();
        await producer.connect();
        for (let i = 0; i < n; i += 1_000) await producer.send({ topic: topic as string, acks: -1, messages: stream.slice(i, Math.min(n, i + 1_000)).map(toMessage) });
        await producer.disconnect();
        say(`topic ${topic}: the first ${n} messages`);
        const prefix = stream.slice(0, n);
        // Per partition, the offset of its last message (the default partitioner: murmur2 of the key).
        const admin = kafka.admin();
        await admin.connect();
        const offsets = await admin.fetchTopicOffsets(topic as string).finally(() => admin.disconnect());
        const lastOffsets = new Map(offsets.filter((o) => o.high !== '0').map((o) => [o.partition, (BigInt(o.high) - 1n).toString()]));
        return { topic: topic as string, messages: n, unique: new Set(prefix.map((e) => e.event_id)).size, lastOffsets, truth: { ...scenario.truth, messages: n, totals: prefixTotals(prefix) } };
      })();
      tiers.set(n, t);
    }
    return t;
  };
  const ladder = (wanted: number): number => {
    let size = 1_000;
    while (size < wanted && size < stream.length) size *= 2;
    return Math.min(size, stream.length);
  };

  const base: Omit<BenchContext, 'topic' | 'messages' | 'unique' | 'lastOffsets' | 'truth'> = {
    brokers: state.kafka.brokers,
    databaseUrl: state.postgres.url,
    database: schema.database,
    schema: schema.schema,
    alertsTopic: alertsTopic as string,
    concurrency: Number(args.concurrency),
    timeoutMs: Number(args.timeout) * 1_000,
  };
  const minSeconds = Number(args['min-seconds']);
  const measure = async (variant: Variant, t: Tier, label: string): Promise<Measurement> => {
    const m = await variant.run({ ...base, ...t });
    say(`${variant.name} ${label}: ${Math.round(m.items / m.seconds)} events/s (${m.items} in ${m.seconds.toFixed(2)} s)${m.correct === false ? `, totals off by ${((m.error ?? 0) * 100).toFixed(1)} %` : ''}`);
    return m;
  };

  // Warm-up and sizing: one discarded run per variant; a variant that finished in under
  // `--min-seconds` gets a topic big enough for 1.5× that (up to the whole stream).
  const consumers = variants.filter((v) => v.group === 'consume');
  const sized = new Map<Variant, Tier>();
  for (const variant of consumers) {
    let t = await tier(variant.slow === true ? 4_000 : 32_000);
    let m = await measure(variant, t, 'warm-up');
    while (m.seconds < minSeconds && t.messages < stream.length) {
      t = await tier(ladder(Math.ceil((m.items / m.seconds) * minSeconds * 2)));
      m = await measure(variant, t, `warm-up at ${t.messages}`);
    }
    sized.set(variant, t);
  }
  // The naive pattern and per-event mode (one transaction per message both) run on the same topic,
  // the larger of the two they were sized to: costs that do not grow with the topic (the first
  // fetches, the last partitions' tails) would otherwise weigh more on the smaller one.
  const perMessage = consumers.filter((v) => v.slow === true && v.scaling === undefined && v.comparison === undefined);
  const shared = perMessage.map((v) => sized.get(v) as Tier).reduce<Tier | undefined>((a, t) => (a === undefined || t.messages > a.messages ? t : a), undefined);
  if (shared !== undefined) for (const v of perMessage) sized.set(v, shared);
  // Likewise each client comparison: the clients of one variant run on the same topic.
  for (const v of consumers) {
    if (v.comparison === undefined) continue;
    const pair = consumers.filter((o) => o.comparison?.what === v.comparison?.what);
    const largest = pair.map((o) => sized.get(o) as Tier).reduce((a, t) => (t.messages > a.messages ? t : a));
    for (const o of pair) sized.set(o, largest);
  }
  // Rounds: every variant once per round, in the same order, so ratios compare neighbours in time.
  const runs = new Map<Variant, Measurement[]>(consumers.map((v) => [v, []]));
  // A run that still ended under `--min-seconds` (the machine got faster) is discarded and redone on a bigger topic.
  for (let i = 1; i <= Number(args.runs); i++) {
    for (const variant of consumers) {
      let t = sized.get(variant) as Tier;
      let m = await measure(variant, t, `run ${i}`);
      while (m.seconds < minSeconds && t.messages < stream.length) {
        t = await tier(ladder(Math.ceil((m.items / m.seconds) * minSeconds * 2)));
        sized.set(variant, t);
        m = await measure(variant, t, `run ${i} again at ${t.messages}`);
      }
      runs.get(variant)?.push(m);
    }
  }
  const results: VariantResult[] = consumers.map((v) =>
    summarise(v.name, v.group, runs.get(v) ?? [], { messages: Math.max(...(runs.get(v) ?? []).map((m) => m.items)), ...(v.scaling === undefined ? {} : { scaling: v.scaling }), ...(v.comparison === undefined ? {} : { comparison: v.comparison }) }),
  );

  // Producers side by side: direct, relay, direct, relay, … on the same number of rows, sized
  // (like the consumers) so that the faster one's run lasts at least `--min-seconds`.
  const producers = variants.filter((v) => v.group === 'produce');
  const produced = new Map<Variant, Measurement[]>(producers.map((v) => [v, []]));
  const producerTier = (rows: number): Tier => ({ topic: '', messages: rows, unique: rows, lastOffsets: new Map(), truth: scenario.truth });
  let rows = relayRows;
  for (const variant of producers) {
    let m = await measure(variant, producerTier(rows), `warm-up at ${rows}`);
    while (m.seconds < minSeconds && rows < MAX_PRODUCER_ROWS) {
      rows = Math.min(MAX_PRODUCER_ROWS, Math.ceil(((m.items / m.seconds) * minSeconds * 1.5) / 1_000) * 1_000);
      m = await measure(variant, producerTier(rows), `warm-up at ${rows}`);
    }
  }
  for (let i = 1; i <= Number(args.runs); i++) {
    for (const variant of producers) produced.get(variant)?.push(await measure(variant, producerTier(rows), `run ${i}`));
  }
  for (const variant of producers) results.push(summarise(variant.name, variant.group, produced.get(variant) ?? [], { messages: rows, ...(variant.comparison === undefined ? {} : { comparison: variant.comparison }) }));
  return { results, messages: scenario.truth.messages };
}

/** Upper bound of the producers' sizing (rows written to the outbox per run). */
const MAX_PRODUCER_ROWS = 1_000_000;

interface Tier {
  topic: string;
  messages: number;
  unique: number;
  lastOffsets: Map<number, string>;
  truth: GroundTruth;
}

/** Campaign → day → micros over the unique events among `events` (the truth of a prefix of the stream). */
function prefixTotals(events: SpendEvent[]): Record<string, Record<string, number>> {
  const seen = new Set<string>();
  const totals: Record<string, Record<string, number>> = {};
  for (const e of events) {
    if (seen.has(e.event_id)) continue;
    seen.add(e.event_id);
    const byDay = (totals[e.campaign_id] ??= {});
    const day = dayOf(e.timestamp);
    byDay[day] = (byDay[day] ?? 0) + e.spend_amount;
  }
  return totals;
}

const state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema } = {};
const interrupt = (): void => {
  say('interrupted; stopping services');
  void Promise.allSettled([state.kafka?.stop(), state.postgres?.stop()]).finally(() => process.exit(130));
};
process.once('SIGINT', interrupt);
process.once('SIGTERM', interrupt);
runBench(() => main(state), () => stopServices(state), say);
