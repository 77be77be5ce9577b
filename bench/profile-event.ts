// npm run bench:profile -- [--events 4000] [--duplicate-rate 0.2] [--partitions 8] [--concurrency 4] [--runs 2] [--only name-substring,…]
// Batch mode: npm run bench:profile -- --events 100000 --only 'raw,batch mode' (raw kafkajs and batch 500, not run by default).
// Where a per-message transaction's time goes: the naive pattern and effectively's per-event mode
// on the same topic, alternating run by run. Every statement goes through a logging Kysely (a
// public seam, no patching): statements per message by kind, and the client-observed time of each
// kind (round trip + server work). CPU per message: this Node process (process.cpuUsage) and the
// run's Postgres backends (/proc/<pid>/stat of the pool's connections, Linux only).
// Prints a Markdown table; writes bench/results/profile-event.{json,md}.
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Kysely, PostgresDialect, sql, type LogEvent } from 'kysely';
import { Pool } from 'pg';
import type { Database } from '@effectively/core';
import { createTestSchema, createTopics, seededRandom, startKafka, startPostgres, testKafka, uniqueName } from '@effectively/testkit';
import { generateScenario, toMessage } from '../examples/ad-spend/src/generator';
import { createAdSpendTables, saveGroundTruth } from '../examples/ad-spend/src/store';
import { effectively, naive, rawBatched, type BenchContext, type Variant } from './variants';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '4000' },
    'duplicate-rate': { type: 'string', default: '0.2' },
    partitions: { type: 'string', default: '8' },
    concurrency: { type: 'string', default: '4' },
    runs: { type: 'string', default: '2' },
    only: { type: 'string' },
  },
});
const say = (line: string): void => void process.stderr.write(`[profile] ${line}\n`);

/** What a statement is, from its text. */
function kind(text: string): string {
  const s = text.trimStart();
  const word = s.slice(0, 12).split(/\s/)[0]?.toUpperCase() ?? '';
  if (['BEGIN', 'COMMIT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE'].includes(word)) return word;
  if (s.includes('processed_events') && s.includes('INSERT INTO')) return 'claim (effectively)';
  if (s.includes('consumer_attempts')) return 'attempt record (effectively, own connection)';
  if (s.includes('partition_fences')) return 'fence';
  if (s.includes('bench_seen') && word === 'SELECT') return 'check id (naive)';
  if (s.includes('bench_seen') && word === 'INSERT') return 'insert id (naive)';
  if (s.includes('campaign_daily_spend')) return 'handler: upsert spend';
  if (s.includes('outbox')) return 'outbox';
  if (s.includes('processed_events')) return 'processed_events other';
  return word.toLowerCase();
}

interface Profile {
  variant: string;
  run: number;
  messages: number;
  seconds: number;
  perSecond: number;
  correct: boolean | null;
  /** Per kind: statements per message and mean client-observed ms per statement. */
  statements: Record<string, { perMessage: number; meanMs: number }>;
  statementsPerMessage: number;
  /** Client-observed database ms per message (all statements), summed over connections. */
  dbMsPerMessage: number;
  nodeCpuUsPerMessage: number;
  postgresCpuUsPerMessage: number | null;
}

function backendCpuTicks(pids: number[]): number | null {
  try {
    return pids.reduce((a, pid) => {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      return a + Number(fields[11]) + Number(fields[12]);
    }, 0);
  } catch {
    return null;
  }
}

async function profile(variant: Variant, ctx: Omit<BenchContext, 'database'>, url: string, run: number): Promise<Profile> {
  const byKind = new Map<string, { n: number; ms: number }>();
  const app = uniqueName('profile');
  const pool = new Pool({ connectionString: url, max: 24, application_name: app });
  const log = (e: LogEvent): void => {
    const k = kind(e.query.sql);
    const entry = byKind.get(k) ?? { n: 0, ms: 0 };
    entry.n++;
    entry.ms += e.queryDurationMillis;
    byKind.set(k, entry);
  };
  const database: Database = { db: new Kysely<unknown>({ dialect: new PostgresDialect({ pool }), log }), pool, destroy: () => Promise.resolve() };
  // Backends that exist before the run (none: the pool is new) are not counted; read their CPU at the end, before closing.
  const cpu = process.cpuUsage();
  const m = await variant.run({ ...ctx, database });
  const nodeCpu = process.cpuUsage(cpu);
  const { rows } = await sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE application_name = ${app}`.execute(database.db);
  const ticks = backendCpuTicks(rows.map((r) => r.pid));
  await database.db.destroy();
  // The variant's setup (TRUNCATE, the totals check) is in the counts too: a few statements, left in.
  const messages = m.items;
  const statements = Object.fromEntries([...byKind].sort((a, b) => b[1].ms - a[1].ms).map(([k, v]) => [k, { perMessage: v.n / messages, meanMs: v.ms / v.n }]));
  const all = [...byKind.values()].reduce((a, v) => ({ n: a.n + v.n, ms: a.ms + v.ms }), { n: 0, ms: 0 });
  return {
    variant: variant.name,
    run,
    messages,
    seconds: m.seconds,
    perSecond: messages / m.seconds,
    correct: m.correct,
    statements,
    statementsPerMessage: all.n / messages,
    dbMsPerMessage: all.ms / messages,
    nodeCpuUsPerMessage: (nodeCpu.user + nodeCpu.system) / messages,
    postgresCpuUsPerMessage: ticks === null ? null : (ticks * (1e6 / 100)) / messages,
  };
}

function markdown(profiles: Profile[], load: number[]): string {
  const lines = [
    `Profile of a transaction per message (${new Date().toISOString()}; load average at start ${load.map((l) => l.toFixed(2)).join(', ')}; ${os.cpus().length} CPUs).`,
    `Settings: events=${args.events}, duplicateRate=${args['duplicate-rate']}, partitions=${args.partitions}, partitionsConsumedConcurrently=${args.concurrency}. Command: \`npm run bench:profile\`.`,
    '',
    '| variant | run | messages/s | statements per message | client-observed DB ms per message | Node CPU µs per message | Postgres CPU µs per message |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...profiles.map((p) => `| ${p.variant} | ${p.run} | ${Math.round(p.perSecond)} | ${p.statementsPerMessage.toFixed(2)} | ${p.dbMsPerMessage.toFixed(2)} | ${Math.round(p.nodeCpuUsPerMessage)} | ${p.postgresCpuUsPerMessage === null ? 'n/a' : Math.round(p.postgresCpuUsPerMessage)} |`),
    '',
    'Statements by kind (last run of each variant): per message, and mean client-observed ms per statement.',
    '',
  ];
  for (const name of [...new Set(profiles.map((p) => p.variant))]) {
    const last = profiles.filter((p) => p.variant === name).at(-1) as Profile;
    lines.push(`**${name}**`, '', '| statement | per message | ms each |', '|---|---:|---:|');
    for (const [k, v] of Object.entries(last.statements)) if (v.perMessage >= 0.01) lines.push(`| ${k} | ${v.perMessage.toFixed(2)} | ${v.meanMs.toFixed(3)} |`);
    lines.push('');
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const load = os.loadavg();
  const [kafkaService, postgres] = await Promise.all([startKafka(), startPostgres()]);
  const schema = await createTestSchema(postgres.url, 'profile', { max: 4 });
  try {
    await createAdSpendTables(schema.db, schema.schema);
    await sql`CREATE TABLE ${sql.id(schema.schema, 'bench_seen')} (event_id text PRIMARY KEY)`.execute(schema.db);
    const scenario = generateScenario({ events: Number(args.events), campaigns: 50, duplicateRate: Number(args['duplicate-rate']), random: seededRandom(2026) });
    await saveGroundTruth(schema.db, schema.schema, scenario.truth);
    const kafka = testKafka(kafkaService.brokers);
    const [topic, alerts] = await createTopics(kafka, [{ prefix: 'profile_spend', partitions: Number(args.partitions) }, { prefix: 'profile_alerts', partitions: 3 }]);
    const stream = scenario.stream.map((s) => s.event);
    const producer = kafka.producer();
    await producer.connect();
    for (let i = 0; i < stream.length; i += 1_000) await producer.send({ topic: topic as string, acks: -1, messages: stream.slice(i, i + 1_000).map(toMessage) });
    await producer.disconnect();
    const admin = kafka.admin();
    await admin.connect();
    const offsets = await admin.fetchTopicOffsets(topic as string).finally(() => admin.disconnect());
    const ctx: Omit<BenchContext, 'database'> = {
      brokers: kafkaService.brokers,
      databaseUrl: postgres.url,
      schema: schema.schema,
      topic: topic as string,
      alertsTopic: alerts as string,
      messages: stream.length,
      unique: new Set(stream.map((e) => e.event_id)).size,
      lastOffsets: new Map(offsets.filter((o) => o.high !== '0').map((o) => [o.partition, (BigInt(o.high) - 1n).toString()])),
      truth: scenario.truth,
      concurrency: Number(args.concurrency),
      timeoutMs: 300_000,
    };
    say(`${stream.length} messages (${ctx.unique} distinct events) on ${args.partitions} partitions`);
    // Batch mode and raw kafkajs only when asked for (`--only batch,raw`, with more --events): the profile of a chunk of 500.
    const variants = args.only === undefined ? [naive, effectively('event')] : [naive, effectively('event'), rawBatched, effectively('batch', 500)].filter((v) => (args.only ?? '').split(',').some((part) => part !== '' && v.name.includes(part)));
    const profiles: Profile[] = [];
    for (let run = 1; run <= Number(args.runs); run++) {
      for (const v of variants) {
        const p = await profile(v, ctx, postgres.url, run);
        say(`${v.name} run ${run}: ${Math.round(p.perSecond)} messages/s, ${p.statementsPerMessage.toFixed(2)} statements per message${p.correct === false ? ', TOTALS WRONG' : ''}`);
        profiles.push(p);
      }
    }
    const md = markdown(profiles, load);
    const dir = path.join(__dirname, 'results');
    writeFileSync(path.join(dir, 'profile-event.md'), md + '\n');
    writeFileSync(path.join(dir, 'profile-event.json'), JSON.stringify({ date: new Date().toISOString(), load, settings: args, profiles }, null, 2) + '\n');
    process.stdout.write(`${md}\n`);
  } finally {
    await schema.drop();
    await kafkaService.stop();
    await postgres.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    say(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
