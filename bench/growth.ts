// npm run bench:growth -- [--sizes 0,1e6,1e7,5e7] [--ids v4,v7] [--modes batch,event] [--runs 3]
//                         [--min-seconds 2] [--batch-size 500] [--duplicate-rate 0.2] [--keep] [--generations 7]
//                         [--wal-compression lz4] [--out growth-name]
// Claim throughput as processed_events grows. For each id kind (random UUIDv4, time-ordered
// UUIDv7) one schema; processed_events is pre-filled in SQL (generate_series) to each size in
// turn, then the idempotent consumer (batch mode and per-event mode, a no-op handler, fed from
// memory through its `client` seam: no Kafka) claims fresh ids of the same kind, 20 % of the
// messages being copies. Each mode gets a warm-up run that sizes its runs to last at least
// --min-seconds; then the modes alternate, --runs rounds per table size. Reports events/s, the
// ratio to the empty table (median of per-round ratios) and table + index size per million ids.
// With --generations N the schema's retention is by generations and the rows are spread over N live
// generations (bench/results/growth-generations.*).
// With --wal-compression the results go to bench/results/growth[-generations]-wal-compression.*;
// --out names the files yourself.
// WAL per event: WAL bytes (LSN difference) and full-page images (pg_stat_wal) over every timed run;
// the whole server's WAL, so nothing else should write meanwhile. With --wal-compression X every mode
// also runs, in the same rounds on the same table, with the consumer's sessions set to
// wal_compression = X (a superuser setting: the bench's role must be allowed to set it).
// Postgres comes from DATABASE_URL, else a private embedded one. Writes bench/results/growth.{json,md,svg}.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { sql, type Kysely } from 'kysely';
import { createDatabase, type Database } from '@effectively/core';
import { enableGenerations, type RawMessage } from '@effectively/kafka';
import { createTestSchema, startPostgres, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { timedConsume, type TimedRun } from './consume-timing';
import { rawMessage } from './memory-client';
import { lineChart } from './report';
import { fmtBytes, fmtInt, median } from './stats';
import { runBench } from './main';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '0,1e6,1e7,5e7' },
    ids: { type: 'string', default: 'v4,v7' },
    modes: { type: 'string', default: 'batch,event' },
    runs: { type: 'string', default: '3' },
    'min-seconds': { type: 'string', default: '2' },
    'batch-size': { type: 'string', default: '500' },
    'duplicate-rate': { type: 'string', default: '0.2' },
    keep: { type: 'boolean', default: false },
    generations: { type: 'string', default: '0' },
    'wal-compression': { type: 'string' },
    out: { type: 'string' },
  },
});
const say = (line: string): void => void process.stderr.write(`[growth] ${line}\n`);
const sizes = (args.sizes ?? '').split(',').map((x) => Number(x.trim()));
if (!sizes.every((n) => Number.isInteger(n) && n >= 0)) throw new Error(`--sizes takes row counts like 0,1e6,1e7; got ${args.sizes}`);
sizes.sort((a, b) => a - b);
type IdKind = 'v4' | 'v7';
const kinds = (args.ids ?? '').split(',').map((x) => x.trim()) as IdKind[];
if (!kinds.every((k) => k === 'v4' || k === 'v7')) throw new Error(`--ids takes v4,v7; got ${args.ids}`);
type Mode = 'batch' | 'event';
const modes = (args.modes ?? '').split(',').map((x) => x.trim()) as Mode[];
if (!modes.every((m) => m === 'batch' || m === 'event')) throw new Error(`--modes takes batch,event; got ${args.modes}`);
const batchSize = Number(args['batch-size']);
/** With --generations N: retention by generations, the rows spread over N live generations (as a week's window with daily generations holds 7). */
const generations = Number(args.generations);
if (!Number.isInteger(generations) || generations < 0 || generations === 1) throw new Error(`--generations takes 0 (plain processed_events) or a number of live generations >= 2; got ${args.generations}`);
const minSeconds = Number(args['min-seconds']);
const walCompression = args['wal-compression'];
if (walCompression !== undefined && !/^(on|pglz|lz4|zstd)$/.test(walCompression)) throw new Error(`--wal-compression takes on, pglz, lz4 or zstd; got ${walCompression}`);
/** bench/results/<name>.{json,md,svg}: growth, growth-generations, and -wal-compression after either when that arm runs. */
const outName = args.out ?? `${generations > 0 ? 'growth-generations' : 'growth'}${walCompression === undefined ? '' : '-wal-compression'}`;
if (!/^[a-z0-9-]+$/.test(outName)) throw new Error(`--out takes a file name without extension (a-z, 0-9, -); got ${outName}`);
const group = 'growth';
const topic = 'growth_topic';

/** A UUIDv7 string for `ms` (48-bit ms timestamp, version 7, variant 10, random rest). */
function uuidv7(ms: number): string {
  const h = ms.toString(16).padStart(12, '0');
  const r = randomBytes(10).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-7${r.slice(0, 3)}-${(8 + (parseInt(r.slice(3, 4), 16) & 3)).toString(16)}${r.slice(4, 7)}-${r.slice(7, 19)}`;
}

/** `n` messages on one partition: fresh ids of `kind`, a share of them sent again a little later. */
function makeMessages(kind: IdKind, n: number): RawMessage[] {
  const dup = Number(args['duplicate-rate']);
  const ids: string[] = [];
  const out: RawMessage[] = [];
  for (let i = 0; out.length < n; i++) {
    const useCopy = ids.length > 10 && Math.random() < dup;
    const id = useCopy ? (ids[ids.length - 1 - Math.floor(Math.random() * Math.min(ids.length, 1_000))] as string) : kind === 'v4' ? randomUUID() : uuidv7(Date.now());
    if (!useCopy) ids.push(id);
    out.push(rawMessage(topic, 0, out.length, id, `{"n":${i}}`));
  }
  return out;
}

/** Appends rows to `size` in SQL, 1M per statement: ids of `kind`, v7 ids older than any the runs make. */
async function prefill(db: Kysely<unknown>, schema: string, kind: IdKind, from: number, to: number): Promise<void> {
  const table = sql.id(schema, generations > 0 ? 'processed_event_generations' : 'processed_events');
  const base = Date.now() - 10 * 365 * 86_400_000;
  for (let start = from; start < to; start += 1_000_000) {
    const end = Math.min(to, start + 1_000_000) - 1;
    const id =
      kind === 'v4'
        ? sql`gen_random_uuid()::text`
        : sql`(SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3) || '-8' || substr(r, 4, 3) || '-' || substr(r, 7, 12)
                FROM (SELECT lpad(to_hex(${base}::bigint + i / 40), 12, '0') AS h, md5(i::text || random()::text) AS r) x)`;
    // With generations: row i in slot i mod N (generations 1..N in slots 0..N-1).
    await sql`INSERT INTO ${table} (consumer_group, event_id, payload_hash, topic, partition, kafka_offset, status${generations > 0 ? sql`, slot` : sql``})
              SELECT ${group}, ${id}, md5(i::text) || md5((i + 1)::text), ${topic}, 0, i, 'processed'${generations > 0 ? sql`, (i % ${generations})::int` : sql``}
              FROM generate_series(${start}::bigint, ${end}::bigint) AS i`.execute(db);
    say(`${kind}: ${fmtInt(end + 1)} rows`);
  }
}

/** What one timed run wrote to the WAL (the whole server's). */
interface WalUse {
  bytes: number;
  fullPageImages: number;
}

interface WalMark {
  lsn: string;
  fullPageImages: number;
}

/**
 * Where the WAL is, and how many full-page images pg_stat_wal counts. Backends report their WAL
 * statistics at most once a second (and when idle, after 10 s): every connection of the
 * consumer's pool is asked to report its pending statistics first (`pg_stat_force_next_flush`,
 * applied as the session goes idle after that statement).
 */
async function walMark(db: Kysely<unknown>, consumer: Database): Promise<WalMark> {
  const clients = await Promise.all(Array.from({ length: 4 }, () => consumer.pool.connect()));
  try {
    for (const c of clients) await c.query('SELECT pg_stat_force_next_flush()');
    for (const c of clients) await c.query('SELECT 1');
  } finally {
    for (const c of clients) c.release();
  }
  const { rows } = await sql<{ lsn: string; f: string }>`SELECT pg_current_wal_lsn()::text AS lsn, (SELECT wal_fpi FROM pg_stat_wal)::text AS f`.execute(db);
  const r = rows[0] as { lsn: string; f: string };
  return { lsn: r.lsn, fullPageImages: Number(r.f) };
}

/** One timed run: the consumer (on `consumer`) claims `messages` from memory; events/s over the whole feed, and the WAL written meanwhile (bytes: LSN difference; full-page images: pg_stat_wal). */
async function runOnce(db: Kysely<unknown>, consumer: Database, schema: string, mode: Mode, messages: RawMessage[]): Promise<TimedRun & { wal: WalUse }> {
  const before = await walMark(db, consumer);
  const m = await timedConsume({ db: consumer.db, schema, group, topic, mode, batchSize, rotateGenerations: false }, [messages]);
  const after = await walMark(db, consumer);
  const { rows } = await sql<{ b: string }>`SELECT pg_wal_lsn_diff(${after.lsn}::pg_lsn, ${before.lsn}::pg_lsn)::text AS b`.execute(db);
  return { ...m, wal: { bytes: Number((rows[0] as { b: string }).b), fullPageImages: after.fullPageImages - before.fullPageImages } };
}

/** A timed arm: a mode, with the server's wal_compression or the consumer's sessions set to --wal-compression. */
interface Arm {
  key: string;
  mode: Mode;
  compressed: boolean;
}
const arms: Arm[] = modes.flatMap((mode) => [{ key: mode, mode, compressed: false }, ...(walCompression === undefined ? [] : [{ key: `${mode}+wal_compression`, mode, compressed: true }])]);

interface SizeResult {
  kind: IdKind;
  /** The size pre-filled (the --sizes entry). */
  size: number;
  rows: number;
  tableBytes: number;
  indexBytes: number;
  pkeyBytes: number;
  perMillion: { tableBytes: number; indexBytes: number } | null;
  modes: Record<string, { messages: number; rates: number[]; median: number; ratios: number[]; ratio: number | null; walBytesPerEvent: number[]; fpiPerEvent: number[] }>;
}

async function sizesOf(db: Kysely<unknown>, schema: string): Promise<{ tableBytes: number; indexBytes: number; pkeyBytes: number; rows: number }> {
  if (generations > 0) {
    // Partitioned: the sums over the partitions.
    const parent = `${schema}.processed_event_generations`;
    const { rows } = await sql<{ t: string; i: string; p: string; n: string }>`
      SELECT (SELECT sum(pg_table_size(relid)) FROM pg_partition_tree(${parent}::regclass) WHERE isleaf)::text AS t,
             (SELECT sum(pg_indexes_size(relid)) FROM pg_partition_tree(${parent}::regclass) WHERE isleaf)::text AS i,
             (SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree(${`${parent}_pkey`}::regclass) WHERE isleaf)::text AS p,
             (SELECT count(*) FROM ${sql.id(schema, 'processed_event_generations')})::text AS n`.execute(db);
    const r = rows[0] as { t: string; i: string; p: string; n: string };
    return { tableBytes: Number(r.t), indexBytes: Number(r.i), pkeyBytes: Number(r.p), rows: Number(r.n) };
  }
  const rel = `${schema}.processed_events`;
  const { rows } = await sql<{ t: string; i: string; p: string; n: string }>`
    SELECT pg_table_size(${rel}::regclass)::text AS t, pg_indexes_size(${rel}::regclass)::text AS i,
           pg_relation_size(${`${schema}.processed_events_pkey`}::regclass)::text AS p, (SELECT count(*) FROM ${sql.id(schema, 'processed_events')})::text AS n`.execute(db);
  const r = rows[0] as { t: string; i: string; p: string; n: string };
  return { tableBytes: Number(r.t), indexBytes: Number(r.i), pkeyBytes: Number(r.p), rows: Number(r.n) };
}

/**
 * Retention by generations with N live generations, as after N daily rotations (window N days,
 * a generation a day): generations 1..N in slots 0..N-1, the last current. Set in the control
 * tables directly (no one rotates during the bench).
 */
async function setUpGenerations(db: Kysely<unknown>, schema: string): Promise<void> {
  await enableGenerations(db, { schema, windowMs: generations * 86_400_000, intervalMs: 86_400_000 });
  const t = (name: string) => sql.id(schema, name);
  await sql`UPDATE ${t('dedup_generations')} SET generation = slot + 1, started_at = now() - make_interval(days => ${generations} - slot),
            ended_at = CASE WHEN slot < ${generations - 1} THEN now() - make_interval(days => ${generations - 1} - slot) END
            WHERE slot < ${generations}`.execute(db);
  await sql`UPDATE ${t('dedup_retention')} SET current_slot = ${generations - 1}, current_generation = ${generations}`.execute(db);
}

async function main(state: { postgres?: RunningPostgres; schemas: TestSchema[]; extra: Database[] }): Promise<void> {
  state.postgres = await startPostgres();
  say(`Postgres: ${state.postgres.source}`);
  const results: SizeResult[] = [];
  for (const kind of kinds) {
    const s = await createTestSchema(state.postgres.url, `growth_${kind}`, { max: 4 });
    state.schemas.push(s);
    // The consumer's sessions with wal_compression set (startup option), on the same schema.
    const compressed: Database | undefined =
      walCompression === undefined ? undefined : createDatabase({ connectionString: state.postgres.url, max: 4, applicationName: 'effectively-bench-growth', pool: { options: `-c wal_compression=${walCompression}` } });
    if (compressed !== undefined) state.extra.push(compressed);
    const dbOf = (arm: Arm): Database => (arm.compressed ? (compressed as Database) : s.database);
    if (generations > 0) await setUpGenerations(s.db, s.schema);
    let filled = 0;
    const empty: Record<string, number[]> = {};
    const sizedMessages: Partial<Record<Mode, number>> = {};
    for (const size of sizes) {
      if (size > filled) {
        const t = Date.now();
        await prefill(s.db, s.schema, kind, filled, size);
        filled = size;
        await sql`VACUUM ANALYZE ${sql.id(s.schema, generations > 0 ? 'processed_event_generations' : 'processed_events')}`.execute(s.db);
        say(`${kind}: pre-filled to ${fmtInt(size)} in ${((Date.now() - t) / 1_000).toFixed(0)} s`);
      }
      const before = await sizesOf(s.db, s.schema);
      const result: SizeResult = {
        kind,
        size,
        rows: before.rows,
        tableBytes: before.tableBytes,
        indexBytes: before.indexBytes,
        pkeyBytes: before.pkeyBytes,
        perMillion: before.rows >= 100_000 ? { tableBytes: (before.tableBytes / before.rows) * 1e6, indexBytes: (before.indexBytes / before.rows) * 1e6 } : null,
        modes: {},
      };
      // Warm-up and sizing once per mode (at the first size); the same message count at every size.
      for (const mode of modes) {
        let n = sizedMessages[mode] ?? (mode === 'batch' ? 20_000 : 500);
        let m = await runOnce(s.db, s.database, s.schema, mode, makeMessages(kind, n));
        say(`${kind} ${fmtInt(size)} ${mode} warm-up: ${fmtInt(m.items / m.seconds)} events/s (${m.items} in ${m.seconds.toFixed(2)} s)`);
        while (sizedMessages[mode] === undefined && m.seconds < minSeconds) {
          n = Math.ceil(((m.items / m.seconds) * minSeconds * 1.5) / 100) * 100;
          m = await runOnce(s.db, s.database, s.schema, mode, makeMessages(kind, n));
          say(`${kind} ${fmtInt(size)} ${mode} warm-up at ${n}: ${fmtInt(m.items / m.seconds)} events/s (${m.seconds.toFixed(2)} s)`);
        }
        sizedMessages[mode] = n;
      }
      for (const arm of arms) result.modes[arm.key] = { messages: sizedMessages[arm.mode] as number, rates: [], median: 0, ratios: [], ratio: null, walBytesPerEvent: [], fpiPerEvent: [] };
      // Statistics as autovacuum keeps them in production, also for the empty table: a table never
      // analysed is planned as empty, and its first timed run (36,000 claims) then ran at a third of
      // the speed of the next ones, which made the empty table's baseline the slowest size.
      await sql`VACUUM ANALYZE ${sql.id(s.schema, generations > 0 ? 'processed_event_generations' : 'processed_events')}`.execute(s.db);
      for (let r = 1; r <= Number(args.runs); r++) {
        for (const arm of arms) {
          const entry = result.modes[arm.key] as SizeResult['modes'][string];
          const m = await runOnce(s.db, dbOf(arm), s.schema, arm.mode, makeMessages(kind, entry.messages));
          entry.rates.push(m.items / m.seconds);
          entry.walBytesPerEvent.push(m.wal.bytes / m.items);
          entry.fpiPerEvent.push(m.wal.fullPageImages / m.items);
          say(`${kind} ${fmtInt(size)} ${arm.key} run ${r}: ${fmtInt(m.items / m.seconds)} events/s (${m.seconds.toFixed(2)} s), WAL ${fmtInt(m.wal.bytes / m.items)} B and ${(m.wal.fullPageImages / m.items).toFixed(2)} full-page images per message`);
        }
      }
      for (const arm of arms) {
        const entry = result.modes[arm.key] as SizeResult['modes'][string];
        entry.median = median(entry.rates);
        if (size === sizes[0]) empty[arm.key] = entry.rates;
        const base = empty[arm.key] ?? [];
        // Runs at different sizes are not neighbours in time: ratios pair run i with the empty table's run i.
        entry.ratios = entry.rates.map((x, i) => x / (base[i] ?? Number.NaN)).filter(Number.isFinite);
        entry.ratio = entry.ratios.length > 0 ? median(entry.ratios) : null;
      }
      results.push(result);
      writeOut(results, state.postgres.source);
    }
    if (!args.keep) {
      await s.drop();
      state.schemas = state.schemas.filter((x) => x !== s);
    }
  }
}

/** The table's name for an arm key (`batch`, `event`, optionally `+wal_compression`). */
function armName(key: string): string {
  const [mode, extra] = key.split('+');
  return `${mode === 'batch' ? `batch ${batchSize}` : 'per-event'}${extra === undefined ? '' : ` + ${extra} ${walCompression ?? ''}`}`;
}

function writeOut(results: SizeResult[], source: string): void {
  const dir = path.join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const report = { date: new Date().toISOString(), postgres: source, settings: { sizes, ids: kinds, modes, runs: Number(args.runs), batchSize, minSeconds, duplicateRate: Number(args['duplicate-rate']), walCompression: walCompression ?? null }, results };
  writeFileSync(path.join(dir, `${outName}.json`), JSON.stringify(report, null, 2) + '\n');
  const lines = [
    `Command: \`npm run bench:growth -- --sizes ${sizes.join(',')} --ids ${kinds.join(',')} --modes ${modes.join(',')} --runs ${args.runs}${generations > 0 ? ` --generations ${generations}` : ''}${walCompression === undefined ? '' : ` --wal-compression ${walCompression}`}${args.out === undefined ? '' : ` --out ${args.out}`}\`; Postgres ${source}; ${report.date}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(', ')} on ${os.cpus().length} CPUs.`,
    ...(generations > 0 ? ['', `Retention by generations: the rows spread evenly over ${generations} live generations (partitions of processed_event_generations), claims going to the newest and checking the ${generations - 1} older ones.`] : []),
    '',
    '| ids | rows in processed_events | table / indexes (primary key) | per million ids: table / indexes | mode | messages per run | events/s (median) | min–max | vs empty table: median of per-round ratios (min–max) | WAL per message: bytes, full-page images (median) |',
    '|---|---:|---|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    for (const [mode, m] of Object.entries(r.modes)) {
      const ratio = m.ratio === null ? '' : `${m.ratio.toFixed(2)}× (${Math.min(...m.ratios).toFixed(2)}–${Math.max(...m.ratios).toFixed(2)})`;
      lines.push(
        `| ${r.kind} | ${fmtInt(r.rows)} | ${fmtBytes(r.tableBytes)} / ${fmtBytes(r.indexBytes)} (${fmtBytes(r.pkeyBytes)}) | ${r.perMillion === null ? '' : `${fmtBytes(r.perMillion.tableBytes)} / ${fmtBytes(r.perMillion.indexBytes)}`} | ${armName(mode)} | ${fmtInt(m.messages)} | ${fmtInt(m.median)} | ${fmtInt(Math.min(...m.rates))}–${fmtInt(Math.max(...m.rates))} | ${ratio} | ${m.walBytesPerEvent.length > 0 ? `${fmtInt(median(m.walBytesPerEvent))} B, ${median(m.fpiPerEvent).toFixed(2)}` : ''} |`,
      );
    }
  }
  lines.push(
    '',
    `No-op handlers: the cost measured is the consumer's own transaction (claim, fence, commit) on one partition and one connection, fed from memory (no Kafka). Rows in the table include those the runs themselves claimed. Pre-filled rows belong to the measuring consumer group, so claims descend the same primary-key index.`,
    '',
    `WAL per message: over each timed run, the WAL written (difference of pg_current_wal_lsn()) and the full-page images counted (pg_stat_wal.wal_fpi, after the consumer's sessions reported their statistics), divided by the messages fed (duplicates included); the whole server's, so anything else writing meanwhile (autovacuum) counts too. A full-page image is the whole 8 KiB page written to the WAL at its first change after a checkpoint (full_page_writes).${walCompression === undefined ? '' : ` "+ wal_compression": the same mode, in the same rounds on the same table, with the consumer's sessions set to wal_compression = ${walCompression}.`}`,
  );
  writeFileSync(path.join(dir, `${outName}.md`), lines.join('\n') + '\n');
  const xLabels = sizes.map((n) => (n === 0 ? '0' : n >= 1e6 ? `${n / 1e6}M` : fmtInt(n)));
  const colours: Record<string, string> = { 'v4 batch': '#3c9d5d', 'v4 event': '#e08a1e', 'v7 batch': '#2a6fd6', 'v7 event': '#b03aa8' };
  const series = kinds.flatMap((k) =>
    modes.map((mode) => ({
      name: `${k} ${mode === 'batch' ? `batch ${batchSize}` : 'per-event'}`,
      colour: colours[`${k} ${mode}`] ?? '#444',
      values: sizes.map((n) => results.find((r) => r.kind === k && r.size === n)?.modes[mode]?.ratio ?? null),
    })),
  );
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="900" height="330" viewBox="0 0 900 330" font-family="sans-serif" font-size="12">`, `<rect width="100%" height="100%" fill="#fff"/>`];
  parts.push(...lineChart({ x: 10, y: 10, width: 880, height: 310, title: 'Claim throughput as processed_events grows: ratio to the empty table (median of per-round ratios)', yLabel: '× empty table', xLabels, series }));
  parts.push('</svg>');
  writeFileSync(path.join(dir, `${outName}.svg`), parts.join('\n') + '\n');
}

const state: { postgres?: RunningPostgres; schemas: TestSchema[]; extra: Database[] } = { schemas: [], extra: [] };
runBench(
  () => main(state),
  async () => {
    for (const d of state.extra) await d.destroy().catch(() => undefined);
    if (!args.keep) for (const s of state.schemas) await s.drop().catch(() => undefined);
    await state.postgres?.stop();
  },
  say,
);
