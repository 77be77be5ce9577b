// npm run bench:prune -- [--old-rows 1000000] [--runs 3] [--min-seconds 2] [--batch-size 500] [--partitions 4]
//                        [--prune-batch 1000] [--duplicate-rate 0.2]
// What retention by DELETE costs the consumer: batch-mode consumption (fed from memory through the
// `client` seam, no Kafka; no-op handlers; --partitions partitions at once) timed alone and while
// `pruneProcessedEvents` runs at full speed on its own connection, deleting rows older than the
// window (--old-rows of them are kept ready before every run). The two alternate round by round;
// reported: events/s alone and while pruning, the median of per-round ratios, and how many rows/s
// the pruner deleted meanwhile (a steady state must delete as many rows per second as it claims).
// Postgres comes from DATABASE_URL, else a private embedded one. Writes bench/results/prune-cost.{json,md}.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { sql, type Kysely } from 'kysely';
import { createDatabase } from '@effectively/core';
import { pruneProcessedEvents, type RawMessage } from '@effectively/kafka';
import { createTestSchema, startPostgres, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { messagesWithCopies, sizeRuns, timedConsume, type TimedRun } from './consume-timing';
import { fmtInt, median } from './stats';
import { runBench, stopServices } from './main';

const { values: args } = parseArgs({
  options: {
    'old-rows': { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '3' },
    'min-seconds': { type: 'string', default: '2' },
    'batch-size': { type: 'string', default: '500' },
    partitions: { type: 'string', default: '4' },
    'prune-batch': { type: 'string', default: '1000' },
    'duplicate-rate': { type: 'string', default: '0.2' },
  },
});
const say = (line: string): void => void process.stderr.write(`[prune] ${line}\n`);
const group = 'prune';
const topic = 'prune_topic';
const oldRows = Number(args['old-rows']);
const partitions = Number(args.partitions);
const batchSize = Number(args['batch-size']);
const pruneBatch = Number(args['prune-batch']);
const windowMs = 7 * 86_400_000;

const makeMessages = (n: number): RawMessage[][] => messagesWithCopies(topic, partitions, n, Number(args['duplicate-rate']));

/** Tops the rows older than the window up to `oldRows` (another group's ids, as a shared table holds). */
async function topUp(db: Kysely<unknown>, schema: string): Promise<void> {
  const table = sql.id(schema, 'processed_events');
  const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${table} WHERE processed_at < now() - make_interval(secs => ${windowMs / 1000})`.execute(db);
  const missing = oldRows - Number(rows[0]?.n ?? 0);
  if (missing <= 0) return;
  await sql`INSERT INTO ${table} (consumer_group, event_id, payload_hash, topic, partition, kafka_offset, status, processed_at)
            SELECT 'old', gen_random_uuid()::text, md5(i::text) || md5((i + 1)::text), ${topic}, 0, i, 'processed', now() - interval '30 days'
            FROM generate_series(1, ${missing}::int) AS i`.execute(db);
  await sql`VACUUM ANALYZE ${table}`.execute(db);
}

interface Run extends TimedRun {
  /** Rows the pruner deleted while the consumer ran, and how long it ran. */
  pruned?: { rows: number; seconds: number; exhausted: boolean };
}

async function consume(db: Kysely<unknown>, schema: string, messages: RawMessage[][], pruner?: Kysely<unknown>): Promise<Run> {
  let pruned = 0;
  let exhausted = false;
  let pruneStarted = 0;
  // The pruner: back-to-back batches (a retention job running flat out) until the consumer is done.
  const prune = async (running: () => boolean): Promise<void> => {
    pruneStarted = Date.now();
    while (running() && pruner !== undefined) {
      const n = await pruneProcessedEvents(pruner, { schema, olderThanMs: windowMs, batchSize: pruneBatch, maxBatches: 1 });
      pruned += n;
      if (n < pruneBatch) {
        exhausted = true;
        break;
      }
    }
  };
  const run = await timedConsume({ db, schema, group, topic, mode: 'batch', batchSize, partitionsConsumedConcurrently: partitions }, messages, pruner === undefined ? undefined : prune);
  return { ...run, ...(pruner === undefined ? {} : { pruned: { rows: pruned, seconds: (run.end - pruneStarted) / 1_000, exhausted } }) };
}

async function main(state: { postgres?: RunningPostgres; schema?: TestSchema }): Promise<void> {
  const load = os.loadavg();
  state.postgres = await startPostgres();
  const s = (state.schema = await createTestSchema(state.postgres.url, 'prune_cost', { max: partitions + 2 }));
  const pruner = createDatabase({ connectionString: state.postgres.url, max: 1, applicationName: 'effectively-bench-pruner' });
  try {
    say(`Postgres: ${state.postgres.source}; pre-filling ${fmtInt(oldRows)} rows older than the window`);
    await topUp(s.db, s.schema);
    // Warm-up and sizing: a run lasts at least --min-seconds.
    const { n, run: m } = await sizeRuns(20_000, Number(args['min-seconds']), 1_000, (k) => consume(s.db, s.schema, makeMessages(k)));
    say(`warm-up: ${fmtInt(m.items / m.seconds)} events/s; ${fmtInt(n)} messages per run`);
    const alone: number[] = [];
    const pruning: number[] = [];
    const ratios: number[] = [];
    const deleted: number[] = [];
    let exhausted = 0;
    for (let r = 1; r <= Number(args.runs); r++) {
      await topUp(s.db, s.schema);
      const a = await consume(s.db, s.schema, makeMessages(n));
      await topUp(s.db, s.schema);
      const b = await consume(s.db, s.schema, makeMessages(n), pruner.db);
      alone.push(a.items / a.seconds);
      pruning.push(b.items / b.seconds);
      ratios.push(b.items / b.seconds / (a.items / a.seconds));
      deleted.push((b.pruned?.rows ?? 0) / (b.pruned?.seconds ?? 1));
      if (b.pruned?.exhausted === true) exhausted++;
      say(`run ${r}: alone ${fmtInt(a.items / a.seconds)} events/s; while pruning ${fmtInt(b.items / b.seconds)} events/s (${fmtInt(b.pruned?.rows ?? 0)} rows deleted, ${fmtInt((b.pruned?.rows ?? 0) / (b.pruned?.seconds ?? 1))}/s${b.pruned?.exhausted === true ? ', ran out of old rows' : ''})`);
    }
    const report = {
      date: new Date().toISOString(),
      load,
      cpus: os.cpus().length,
      postgres: state.postgres.source,
      settings: { oldRows, runs: Number(args.runs), messagesPerRun: n, batchSize, partitions, pruneBatch, duplicateRate: Number(args['duplicate-rate']) },
      alone,
      pruning,
      ratios,
      deletedPerSecond: deleted,
      runsThatRanOutOfOldRows: exhausted,
    };
    const pct = (x: number): string => `${(x * 100).toFixed(0)} %`;
    const md = [
      `Command: \`npm run bench:prune -- --old-rows ${oldRows} --runs ${args.runs}\`; Postgres ${state.postgres.source}; ${report.date}; load average at start ${load.map((l) => l.toFixed(2)).join(', ')} on ${report.cpus} CPUs.`,
      '',
      '| consuming (batch 500, no-op handlers, ' + partitions + ' partitions at once) | events/s (median) | min–max |',
      '|---|---:|---:|',
      `| alone | ${fmtInt(median(alone))} | ${fmtInt(Math.min(...alone))}–${fmtInt(Math.max(...alone))} |`,
      `| while \`pruneProcessedEvents\` deletes flat out (batches of ${pruneBatch}, own connection) | ${fmtInt(median(pruning))} | ${fmtInt(Math.min(...pruning))}–${fmtInt(Math.max(...pruning))} |`,
      '',
      `While pruning, throughput is **${median(ratios).toFixed(2)}×** of consuming alone (median of per-round ratios, ${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}): a cost of ${pct(1 - median(ratios))}, while the pruner deleted ${fmtInt(median(deleted))} rows/s (median). ` +
        `A steady state must delete as many rows per second as it claims (${fmtInt(median(pruning))}/s here), so the DELETE runs as long as consuming does.` +
        (exhausted > 0 ? ` In ${exhausted} run(s) the pruner ran out of old rows before consuming ended (raise --old-rows).` : ''),
      '',
    ].join('\n');
    const dir = path.join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'prune-cost.json'), JSON.stringify(report, null, 2) + '\n');
    writeFileSync(path.join(dir, 'prune-cost.md'), md);
    process.stdout.write(md);
  } finally {
    await pruner.destroy();
  }
}

const state: { postgres?: RunningPostgres; schema?: TestSchema } = {};
runBench(() => main(state), () => stopServices(state), say);
