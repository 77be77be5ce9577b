// Writer cost (Postgres only): throughput of writer transactions with N concurrent connections,
// each transaction: BEGIN; UPDATE one row (of 1,000) of a small effects table; write one outbox
// row (key among 1,000); COMMIT. Three ways to write the row, measured side by side in short
// windows, interleaved (their order rotates from run to run):
//   (a) `createOutbox({ schema }).publish(trx, msg)`: lane lock + NOTIFY + INSERT (the default);
//   (b) the same with `notify: false`: lane lock + INSERT;
//   (c) a plain INSERT into the outbox table: no lane lock, no NOTIFY (the floor);
//   (d) diagnostic: `publish` with `notify: false` of a keyless row, i.e. publish's own INSERT
//       statement without the lane-lock statement; (c)→(d) is the INSERT's shape, (d)→(b) the
//       lane lock (one more statement, plus waits on lanes held by other writers until commit).
// A session LISTENs on the channel throughout, as an idle relay would. The outbox is truncated
// before each window. Reported: committed tx/s (median over runs) and, per N, the median over
// runs of each run's ratio to (c).
import { createDatabase, createOutbox, OUTBOX_CHANNEL, uuidv7, type Database, type Outbox } from '@effectively/core';
import { createTestSchema, seededRandom } from '@effectively/testkit';
import { sql, type Transaction } from 'kysely';
import pg from 'pg';
import { fmtInt, fmtMs, fmtRatio, median, now, percentile, round, sleep } from './stats';

export const WRITER_VARIANTS = [
  'publish, notify (default)',
  'publish, notify: false',
  'plain INSERT (no lane lock, no NOTIFY)',
  'publish, notify: false, keyless (no lane lock)',
] as const;
export type WriterVariant = (typeof WRITER_VARIANTS)[number];
const FLOOR: WriterVariant = 'plain INSERT (no lane lock, no NOTIFY)';

export interface WriterOptions {
  /** Concurrent writer connections to measure, e.g. [1, 8]. */
  writers: number[];
  /** Measured window per (variant, N, run). */
  seconds: number;
  /** Unmeasured lead-in per window (connections open, caches warm). */
  warmupSeconds: number;
  runs: number;
  say: (line: string) => void;
}

export interface WriterWindow {
  run: number;
  tx: number;
  seconds: number;
  txPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** CPU time of this (client) process during the window, in cores (1 = one core busy). */
  clientCores: number;
}

export interface WriterResult {
  variant: WriterVariant;
  writers: number;
  windows: WriterWindow[];
  median: number;
  min: number;
  max: number;
  /** Median over runs of (this variant's tx/s ÷ the plain INSERT's tx/s in the same run and N). */
  ratioToFloor: number;
  p50Ms: number;
  p99Ms: number;
  clientCores: number;
}

export interface WritersReport {
  settings: { writers: string; seconds: number; warmupSeconds: number; runs: number; effectRows: number; keys: number; synchronousCommit: string; notificationsReceived: number };
  results: WriterResult[];
}

const TOPIC = 'bench.writers';
const VALUE = JSON.stringify({ type: 'account.updated', note: 'x'.repeat(100) });
const ROWS = 1_000;
const KEYS = 1_000;

export async function runWriterBench(url: string, o: WriterOptions): Promise<WritersReport> {
  const ts = await createTestSchema(url, 'bench_writers', { max: 2 });
  const effects = sql.id(ts.schema, 'bench_effects');
  const outboxTable = sql.id(ts.schema, 'outbox');
  const pools = new Map<number, Database>();
  const listener = new pg.Client({ connectionString: url, application_name: 'bench-writers-listener' });
  let notifications = 0;
  try {
    await sql`CREATE TABLE ${effects} (id integer PRIMARY KEY, n bigint NOT NULL DEFAULT 0)`.execute(ts.db);
    await sql`INSERT INTO ${effects} (id) SELECT generate_series(1, ${ROWS})`.execute(ts.db);
    const syncCommit = (await sql<{ s: string }>`SELECT current_setting('synchronous_commit') AS s`.execute(ts.db)).rows[0]?.s ?? '?';
    listener.on('notification', () => void notifications++);
    await listener.connect();
    await listener.query(`LISTEN ${OUTBOX_CHANNEL}`);

    const withNotify = createOutbox({ schema: ts.schema });
    const withoutNotify = createOutbox({ schema: ts.schema, notify: false });
    const publishWith = (outbox: Outbox) => async (trx: Transaction<unknown>, key: string): Promise<void> => {
      await outbox.publish(trx, { topic: TOPIC, key, value: VALUE });
    };
    const write: Record<WriterVariant, (trx: Transaction<unknown>, key: string) => Promise<void>> = {
      'publish, notify (default)': publishWith(withNotify),
      'publish, notify: false': publishWith(withoutNotify),
      'plain INSERT (no lane lock, no NOTIFY)': async (trx, key) => {
        await sql`INSERT INTO ${outboxTable} (event_id, topic, message_key, payload, headers)
          VALUES (${uuidv7()}, ${TOPIC}, ${Buffer.from(key)}, ${Buffer.from(VALUE)}, '{}'::jsonb)`.execute(trx);
      },
      'publish, notify: false, keyless (no lane lock)': async (trx) => {
        await withoutNotify.publish(trx, { topic: TOPIC, key: null, value: VALUE });
      },
    };
    for (const n of o.writers) pools.set(n, createDatabase({ connectionString: url, max: n, applicationName: `bench-writers-${n}` }));

    const windows = new Map<string, WriterWindow[]>();
    for (let run = 1; run <= o.runs; run++) {
      for (const n of o.writers) {
        const order = WRITER_VARIANTS.map((_, i) => WRITER_VARIANTS[(i + run - 1) % WRITER_VARIANTS.length] as WriterVariant);
        for (const variant of order) {
          await sql`TRUNCATE ${outboxTable}`.execute(ts.db);
          const w = await measureWindow(pools.get(n) as Database, n, write[variant], effects, o, run);
          o.say(`writers: run ${run}, ${n} writer${n === 1 ? '' : 's'}, ${variant}: ${fmtInt(w.txPerSecond)} tx/s (p50 ${fmtMs(w.p50Ms)} ms, p99 ${fmtMs(w.p99Ms)} ms, client ${w.clientCores} cores${w.errors > 0 ? `, ${w.errors} errors` : ''})`);
          const k = `${variant}\u0000${n}`;
          windows.set(k, [...(windows.get(k) ?? []), w]);
        }
      }
    }

    const results: WriterResult[] = [];
    for (const n of o.writers) {
      const floor = windows.get(`${FLOOR}\u0000${n}`) ?? [];
      for (const variant of WRITER_VARIANTS) {
        const ws = windows.get(`${variant}\u0000${n}`) ?? [];
        const rates = ws.map((w) => w.txPerSecond);
        const ratios = ws.map((w) => w.txPerSecond / (floor.find((f) => f.run === w.run)?.txPerSecond ?? Number.NaN));
        results.push({
          variant,
          writers: n,
          windows: ws,
          median: round(median(rates), 1),
          min: round(Math.min(...rates), 1),
          max: round(Math.max(...rates), 1),
          ratioToFloor: round(median(ratios), 3),
          p50Ms: round(median(ws.map((w) => w.p50Ms)), 3),
          p99Ms: round(median(ws.map((w) => w.p99Ms)), 3),
          clientCores: round(median(ws.map((w) => w.clientCores)), 2),
        });
      }
    }
    return {
      settings: { writers: o.writers.join(','), seconds: o.seconds, warmupSeconds: o.warmupSeconds, runs: o.runs, effectRows: ROWS, keys: KEYS, synchronousCommit: syncCommit, notificationsReceived: notifications },
      results,
    };
  } finally {
    await listener.end().catch(() => undefined);
    for (const p of pools.values()) await p.destroy().catch(() => undefined);
    await ts.drop().catch(() => undefined);
  }
}

async function measureWindow(
  database: Database,
  n: number,
  write: (trx: Transaction<unknown>, key: string) => Promise<void>,
  effects: ReturnType<typeof sql.id>,
  o: WriterOptions,
  run: number,
): Promise<WriterWindow> {
  let counting = false;
  let stop = false;
  let errors = 0;
  const latencies: number[] = [];
  const loops = Array.from({ length: n }, async (_, w) => {
    const random = seededRandom(run * 1_000 + w); // the same rows and keys for every variant of a run
    while (!stop) {
      const row = 1 + Math.floor(random() * ROWS);
      const key = `acct-${Math.floor(random() * KEYS)}`;
      const started = now();
      try {
        await database.db.transaction().execute(async (trx) => {
          await sql`UPDATE ${effects} SET n = n + 1 WHERE id = ${row}`.execute(trx);
          await write(trx, key);
        });
        if (counting) latencies.push(now() - started);
      } catch {
        errors++;
        if (errors > 100) throw new Error('more than 100 failed writer transactions in one window');
      }
    }
  });
  await sleep(o.warmupSeconds * 1_000);
  counting = true;
  const t0 = now();
  const cpu0 = process.cpuUsage();
  await sleep(o.seconds * 1_000);
  counting = false;
  const seconds = (now() - t0) / 1_000;
  const cpu = process.cpuUsage(cpu0);
  stop = true;
  await Promise.all(loops);
  return {
    run,
    tx: latencies.length,
    seconds: round(seconds, 3),
    txPerSecond: round(latencies.length / seconds, 1),
    p50Ms: round(percentile(latencies, 50), 3),
    p99Ms: round(percentile(latencies, 99), 3),
    errors,
    clientCores: round((cpu.user + cpu.system) / 1e6 / seconds, 2),
  };
}

export function writersMarkdown(w: WritersReport): string {
  const s = w.settings;
  const lines = [
    '### Writer transactions: cost of the lane lock and of NOTIFY (Postgres only)',
    '',
    `Each transaction: BEGIN, UPDATE one of ${fmtInt(s.effectRows)} rows, write one outbox row (key among ${fmtInt(s.keys)}), COMMIT. ` +
      `${s.seconds} s windows after ${s.warmupSeconds} s warm-up, ${s.runs} runs, variants interleaved; synchronous_commit=${s.synchronousCommit}; one session LISTENing throughout.`,
    '',
    '| writers | outbox write | tx/s (median) | min–max | vs plain INSERT (median of per-run ratios) | tx p50 / p99 ms | client CPU (cores) |',
    '|---:|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of w.results) {
    lines.push(`| ${r.writers} | ${r.variant} | ${fmtInt(r.median)} | ${fmtInt(r.min)}–${fmtInt(r.max)} | ${fmtRatio(r.ratioToFloor)} | ${fmtMs(r.p50Ms)} / ${fmtMs(r.p99Ms)} | ${r.clientCores.toFixed(2)} |`);
  }
  lines.push(
    '',
    'The keyless row is a diagnostic: `publish`\'s own INSERT without the lane-lock statement (keyless rows need no order). ' +
      'Client CPU: this benchmark process (kysely + pg driver), out of the machine\'s cores shared with Postgres.',
  );
  return lines.join('\n') + '\n';
}
