// Outbox table health on Postgres alone (no Kafka): what draining a full outbox does to the table
// when published rows are deleted (what the relay does) or marked `status = 'published'` (what it
// used to do), and what an open transaction pinning the xmin horizon does to the delete mode.
//
//   npm run bench:table -- [--rows 200000] [--batch-size 500] [--timeout 120] [--modes delete,mark-published,delete-pinned]
//   npm run bench -- --only table [--table-rows 1000000]      (part of the main bench, into latest.*)
//
// Each mode gets a fresh schema migrated with the real migrations (createTestSchema), is filled
// with N rows (~200-byte payloads, 1,000 keys), ANALYZEd, then drained the way a relay cycle reads
// it: `anyDue` (the idle probe), then in one transaction `fetchPending` (the relay's own SQL,
// imported from packages/relay/src/outbox-store.ts) for up to `batch-size` rows over all 64 lanes,
// then DELETE them (`deletePublished`) or UPDATE them to published, COMMIT. One connection does all
// of it. Reported per mode: rows/s, per-batch fetch and probe time (median of the first vs the last
// 10 % of batches), n_dead_tup and sizes after the drain, then again after a plain VACUUM.
// Standalone runs write bench/results/outbox-table.{json,md}. Bounded: each drain stops after
// --timeout seconds (reported as cut short).
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { OUTBOX_LANES } from '@effectively/migrations';
import { createTestSchema, startPostgres, type RunningPostgres } from '@effectively/testkit';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { anyDue, deletePublished, fetchPending, outboxBacklog } from '../packages/relay/src/outbox-store';
import { fmtBytes, fmtInt, fmtMs, median, now, round, sleep } from './stats';

export type TableMode = 'delete' | 'mark-published' | 'delete-pinned' | 'mark-published-pinned';
export const TABLE_MODES: readonly TableMode[] = ['delete', 'mark-published', 'delete-pinned', 'mark-published-pinned'];
export const DEFAULT_TABLE_MODES: readonly TableMode[] = ['delete', 'mark-published', 'delete-pinned'];

export interface TableOptions {
  rows: number;
  batchSize: number;
  /** Longest drain per mode, ms. */
  timeoutMs: number;
  modes: readonly TableMode[];
  say: (line: string) => void;
}

/** Sizes and statistics of the outbox table at one moment. */
export interface TableSnapshot {
  tableBytes: number;
  indexBytes: number;
  /** `outbox_pending_idx` (id) WHERE status = 'pending': the index the relay's scans walk. */
  pendingIndexBytes: number;
  liveTuples: number;
  deadTuples: number;
  autovacuums: number;
  autoanalyzes: number;
}

export interface TableModeResult {
  mode: TableMode;
  rows: number;
  drained: number;
  batches: number;
  fillSeconds: number;
  drainSeconds: number;
  rowsPerSecond: number;
  /** The drain hit --timeout before the table was empty. */
  cutShort: boolean;
  /** Per batch, ms: fetchPending inside the claim transaction. */
  fetchMs: { first10: number; last10: number; median: number; max: number };
  /**
   * The anyDue probe, ms: before each claim (first vs last 10 % of batches), and on the drained
   * table (nothing due: what an idle relay runs every poll and every NOTIFY), before and after VACUUM.
   */
  probeMs: { first10: number; last10: number; idleDrained: number; idleVacuumed: number };
  /** Per batch, ms: the DELETE/UPDATE plus COMMIT. */
  writeMs: { first10: number; last10: number };
  /** `outboxBacklog` (the relay's gauge query, run every 5 s in its loop), ms: full table, drained, drained after VACUUM. */
  backlogMs: { full: number; drained: number; vacuumed: number };
  before: TableSnapshot;
  after: TableSnapshot;
  /** Pinned modes: a VACUUM run while the pinning transaction is still open. */
  vacuumWhilePinned?: TableSnapshot;
  vacuumSeconds: number;
  afterVacuum: TableSnapshot;
}

export interface TableReport {
  settings: { rows: number; batchSize: number; timeoutSeconds: number; lanes: number; server: string };
  results: TableModeResult[];
}

const ALL_LANES = Array.from({ length: OUTBOX_LANES }, (_, i) => i);

async function snapshot(db: Kysely<unknown>, schema: string): Promise<TableSnapshot> {
  // Statistics reach pg_stat_* when a backend flushes them (at most once a second unless forced);
  // the drain ran on this pool's only connection, so force its flush, then read.
  await sql`SELECT pg_stat_force_next_flush()`.execute(db);
  await sleep(150);
  const { rows } = await sql<{ table_bytes: string; index_bytes: string; pending_bytes: string; live: string; dead: string; av: string; aa: string }>`
    SELECT pg_relation_size(s.relid) AS table_bytes, pg_indexes_size(s.relid) AS index_bytes,
      pg_relation_size(to_regclass(${`${schema}.outbox_pending_idx`})) AS pending_bytes,
      s.n_live_tup AS live, s.n_dead_tup AS dead, s.autovacuum_count AS av, s.autoanalyze_count AS aa
    FROM pg_stat_user_tables s WHERE s.schemaname = ${schema} AND s.relname = 'outbox'`.execute(db);
  const r = rows[0];
  if (r === undefined) throw new Error(`no statistics for ${schema}.outbox`);
  return {
    tableBytes: Number(r.table_bytes),
    indexBytes: Number(r.index_bytes),
    pendingIndexBytes: Number(r.pending_bytes),
    liveTuples: Number(r.live),
    deadTuples: Number(r.dead),
    autovacuums: Number(r.av),
    autoanalyzes: Number(r.aa),
  };
}

/** N pending rows, ~200-byte JSON payloads, keys among 1,000, in chunks of 50,000 per INSERT. */
async function fill(db: Kysely<unknown>, schema: string, rows: number): Promise<void> {
  const outbox = sql.id(schema, 'outbox');
  for (let from = 1; from <= rows; from += 50_000) {
    const to = Math.min(rows, from + 49_999);
    await sql`
      INSERT INTO ${outbox} (event_id, topic, message_key, payload, headers)
      SELECT 'fill-' || g, 'bench.table', convert_to('cmp-' || (g % 1000), 'UTF8'),
        convert_to(format('{"type":"campaign.budget_exceeded","campaign_id":"cmp-%s","day":"2026-01-05","daily_budget":1000000000,"total":%s,"note":"%s"}', g % 1000, 1000000000 + g, repeat('x', 60)), 'UTF8'),
        '{"content-type":"application/json"}'::jsonb
      FROM generate_series(${from}::bigint, ${to}::bigint) AS g`.execute(db);
  }
}

async function markPublished(db: Kysely<unknown>, schema: string, ids: readonly string[]): Promise<void> {
  await sql`UPDATE ${sql.id(schema, 'outbox')} SET status = 'published', published_at = now() WHERE id = ANY(${[...ids]}::bigint[])`.execute(db);
}

const tenth = (values: readonly number[], which: 'first' | 'last'): number => {
  const n = Math.max(1, Math.floor(values.length / 10));
  return median(which === 'first' ? values.slice(0, n) : values.slice(-n));
};

async function runMode(url: string, mode: TableMode, o: TableOptions): Promise<TableModeResult> {
  const deletes = mode.startsWith('delete');
  const pinned = mode.endsWith('-pinned');
  // One connection for fill, drain and statistics (see snapshot()).
  const ts = await createTestSchema(url, 'bench_table', { max: 1 });
  let pin: pg.Client | undefined;
  try {
    const { db, schema } = ts;
    let t = now();
    await fill(db, schema, o.rows);
    await sql`ANALYZE ${sql.id(schema, 'outbox')}`.execute(db);
    const fillSeconds = (now() - t) / 1_000;
    const before = await snapshot(db, schema);
    const timeBacklog = async (): Promise<number> => {
      const b = now();
      await outboxBacklog(db, schema);
      return round(now() - b, 3);
    };
    const backlogFull = await timeBacklog();

    if (pinned) {
      // An idle-in-transaction session holding an xid: nothing deleted after it started is dead to everyone.
      pin = new pg.Client({ connectionString: url, application_name: 'bench-xmin-pin' });
      await pin.connect();
      await pin.query('BEGIN');
      await pin.query('SELECT txid_current()');
    }

    const fetchMs: number[] = [];
    const probeMs: number[] = [];
    const writeMs: number[] = [];
    let drained = 0;
    let cutShort = false;
    const started = now();
    const deadline = started + o.timeoutMs;
    for (;;) {
      t = now();
      const due = await anyDue(db, schema, ALL_LANES);
      if (!due) break;
      probeMs.push(now() - t);
      let fetched = 0;
      let writeStarted = 0;
      await db.transaction().execute(async (trx) => {
        const u = now();
        const rows = await fetchPending(trx, schema, ALL_LANES, o.batchSize);
        fetchMs.push(now() - u);
        fetched = rows.length;
        writeStarted = now();
        const ids = rows.map((r) => r.id);
        if (deletes) await deletePublished(trx, schema, ids);
        else await markPublished(trx, schema, ids);
      });
      writeMs.push(now() - writeStarted); // DELETE/UPDATE + COMMIT
      drained += fetched;
      if (fetched === 0) throw new Error('anyDue said rows are due but fetchPending returned none');
      if (now() > deadline) {
        cutShort = drained < o.rows;
        break;
      }
    }
    const drainSeconds = (now() - started) / 1_000;
    const backlogDrained = await timeBacklog();
    const timeProbe = async (): Promise<number> => {
      const b = now();
      await anyDue(db, schema, ALL_LANES);
      return round(now() - b, 3);
    };
    const idleDrained = await timeProbe();
    const after = await snapshot(db, schema);
    let vacuumWhilePinned: TableSnapshot | undefined;
    if (pin !== undefined) {
      await sql`VACUUM ${sql.id(schema, 'outbox')}`.execute(db);
      vacuumWhilePinned = await snapshot(db, schema);
      await pin.query('ROLLBACK');
      await pin.end();
      pin = undefined;
    }
    t = now();
    await sql`VACUUM ${sql.id(schema, 'outbox')}`.execute(db);
    const vacuumSeconds = (now() - t) / 1_000;
    const afterVacuum = await snapshot(db, schema);
    const backlogVacuumed = await timeBacklog();
    const idleVacuumed = await timeProbe();
    return {
      mode,
      rows: o.rows,
      drained,
      batches: fetchMs.length,
      fillSeconds: round(fillSeconds),
      drainSeconds: round(drainSeconds, 3),
      rowsPerSecond: round(drained / Math.max(drainSeconds, 0.001), 0),
      cutShort,
      fetchMs: { first10: round(tenth(fetchMs, 'first'), 3), last10: round(tenth(fetchMs, 'last'), 3), median: round(median(fetchMs), 3), max: round(Math.max(...fetchMs), 3) },
      probeMs: { first10: round(tenth(probeMs, 'first'), 3), last10: round(tenth(probeMs, 'last'), 3), idleDrained, idleVacuumed },
      writeMs: { first10: round(tenth(writeMs, 'first'), 3), last10: round(tenth(writeMs, 'last'), 3) },
      backlogMs: { full: backlogFull, drained: backlogDrained, vacuumed: backlogVacuumed },
      before,
      after,
      ...(vacuumWhilePinned === undefined ? {} : { vacuumWhilePinned }),
      vacuumSeconds: round(vacuumSeconds, 3),
      afterVacuum,
    };
  } finally {
    if (pin !== undefined) await pin.end().catch(() => undefined);
    await ts.drop().catch(() => undefined);
  }
}

export async function runTableBench(url: string, o: TableOptions): Promise<TableReport> {
  const server = await serverVersion(url);
  const results: TableModeResult[] = [];
  for (const mode of o.modes) {
    o.say(`table: ${mode}: filling ${fmtInt(o.rows)} rows, draining in batches of ${o.batchSize} …`);
    const r = await runMode(url, mode, o);
    o.say(
      `table: ${mode}: ${fmtInt(r.rowsPerSecond)} rows/s (${fmtInt(r.drained)} rows in ${r.drainSeconds.toFixed(2)} s${r.cutShort ? ', CUT SHORT by --timeout' : ''}); ` +
        `fetch ${fmtMs(r.fetchMs.first10)} → ${fmtMs(r.fetchMs.last10)} ms; n_dead_tup ${fmtInt(r.after.deadTuples)}; table ${fmtBytes(r.after.tableBytes)}, indexes ${fmtBytes(r.after.indexBytes)}`,
    );
    results.push(r);
  }
  return { settings: { rows: o.rows, batchSize: o.batchSize, timeoutSeconds: o.timeoutMs / 1_000, lanes: OUTBOX_LANES, server: `PostgreSQL ${server}` }, results };
}

async function serverVersion(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]?.v ?? 'unknown';
  } finally {
    await client.end();
  }
}

const snap = (s: TableSnapshot): string => `${fmtBytes(s.tableBytes)} / ${fmtBytes(s.indexBytes)} (pending idx ${fmtBytes(s.pendingIndexBytes)})`;

export function tableMarkdown(t: TableReport): string {
  const lines = [
    `### Outbox table: draining ${fmtInt(t.settings.rows)} rows in claims of ${t.settings.batchSize} (Postgres only)`,
    '',
    `${t.settings.server}; each mode on a fresh schema; one connection; drain capped at ${t.settings.timeoutSeconds} s. ` +
      'A cycle = `anyDue` probe, then BEGIN, `fetchPending` (the relay\'s SQL, all 64 lanes), DELETE or UPDATE status=\'published\', COMMIT. ' +
      'Probe = `anyDue`, which the relay runs before every claim, every poll and every NOTIFY; idle = on the drained table, nothing due. ' +
      'Backlog query = `outboxBacklog` (pending/parked counts and oldest pending row), which the relay runs every 5 s.',
    '',
    '| mode | rows/s | drained | fetch ms: first 10 % → last 10 % of batches (max) | probe ms: first → last 10 %; idle: drained → vacuumed | write+commit ms: first → last 10 % | n_dead_tup after | table / indexes: full → drained | backlog query ms: full → drained → vacuumed | after VACUUM: n_live_tup, n_dead_tup, table / indexes |',
    '|---|---:|---:|---:|---:|---:|---:|---|---:|---|',
  ];
  for (const r of t.results) {
    lines.push(
      `| ${r.mode} | ${fmtInt(r.rowsPerSecond)} | ${fmtInt(r.drained)}${r.cutShort ? ' (cut short)' : ''} in ${r.drainSeconds.toFixed(1)} s | ${fmtMs(r.fetchMs.first10)} → ${fmtMs(r.fetchMs.last10)} (${fmtMs(r.fetchMs.max)}) | ${fmtMs(r.probeMs.first10)} → ${fmtMs(r.probeMs.last10)}; ${fmtMs(r.probeMs.idleDrained)} → ${fmtMs(r.probeMs.idleVacuumed)} | ${fmtMs(r.writeMs.first10)} → ${fmtMs(r.writeMs.last10)} | ${fmtInt(r.after.deadTuples)} | ${snap(r.before)} → ${snap(r.after)} | ${fmtMs(r.backlogMs.full)} → ${fmtMs(r.backlogMs.drained)} → ${fmtMs(r.backlogMs.vacuumed)} | ${fmtInt(r.afterVacuum.liveTuples)}, ${fmtInt(r.afterVacuum.deadTuples)}, ${snap(r.afterVacuum)} |`,
    );
  }
  for (const r of t.results) {
    if (r.vacuumWhilePinned !== undefined) {
      lines.push('', `${r.mode}: a VACUUM while the session is still open leaves n_dead_tup ${fmtInt(r.vacuumWhilePinned.deadTuples)}, table / indexes ${snap(r.vacuumWhilePinned)}.`);
    }
  }
  lines.push(
    '',
    '`-pinned`: another session holds `BEGIN; SELECT txid_current();` open (idle in transaction) for the whole drain, released before the last VACUUM. ' +
      'n_live_tup / n_dead_tup are pg_stat_user_tables\' counters (estimates; VACUUM re-estimates n_live_tup), read after `pg_stat_force_next_flush()`; autovacuum runs with its defaults (runs during the drains: ' +
      t.results.map((r) => `${r.mode} ${r.after.autovacuums - r.before.autovacuums}`).join(', ') +
      ').',
  );
  return lines.join('\n') + '\n';
}

if (require.main === module) {
  const { values: args } = parseArgs({
    options: {
      rows: { type: 'string', default: '200000' },
      'batch-size': { type: 'string', default: '500' },
      timeout: { type: 'string', default: '120' },
      modes: { type: 'string', default: DEFAULT_TABLE_MODES.join(',') },
    },
  });
  const say = (line: string): void => void process.stderr.write(`[bench:table] ${line}\n`);
  const modes = (args.modes ?? '').split(',').map((m) => m.trim()) as TableMode[];
  for (const m of modes) if (!TABLE_MODES.includes(m)) throw new Error(`unknown mode ${m}; choose from ${TABLE_MODES.join(', ')}`);
  let postgres: RunningPostgres | undefined;
  let code = 0;
  const stop = (): void => {
    void Promise.resolve(postgres?.stop()).finally(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  (async () => {
    say('starting Postgres …');
    postgres = await startPostgres();
    const table = await runTableBench(postgres.url, { rows: Number(args.rows), batchSize: Number(args['batch-size']), timeoutMs: Number(args.timeout) * 1_000, modes, say });
    const report = { date: new Date().toISOString(), machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown', memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, postgres: postgres.source }, table };
    const dir = path.join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    const md = tableMarkdown(table);
    writeFileSync(path.join(dir, 'outbox-table.json'), JSON.stringify(report, null, 2) + '\n');
    writeFileSync(path.join(dir, 'outbox-table.md'), md);
    process.stdout.write(`\n${md}`);
    say(`wrote ${path.relative(process.cwd(), dir)}/outbox-table.{json,md}`);
  })()
    .catch((error: unknown) => {
      say(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      code = 1;
    })
    .finally(async () => {
      await postgres?.stop().catch(() => undefined);
      process.exit(code);
    });
}
