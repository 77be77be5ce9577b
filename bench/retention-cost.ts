// npm run bench:retention -- [--runs 5] [--min-seconds 3] [--batch-size 500] [--partitions 4] [--window 4s] [--interval 1s]
//                            [--check-ms 100] [--duplicate-rate 0.2] [--mode batch|event]
// What retention by generations costs the consumer while it runs. Consumption at full speed (fed
// from memory through the `client` seam, no Kafka; no-op handlers; --partitions partitions at
// once) on a schema whose retention is by generations (window --window, a new generation every
// --interval, so several are live), timed alone (no rotation during the run) and while rotation
// runs on a short schedule (`rotateProcessedEvents` every --check-ms on its own connection: a
// switch every --interval and the generation older than the window emptied by TRUNCATE as often).
// A third arm times the same consumption on a schema without generations (plain processed_events)
// as the reference for the claim path itself. The arms alternate round by round; reported:
// events/s, the median of per-round ratios with min–max, rotations and generations forgotten per run.
// Postgres comes from DATABASE_URL, else a private embedded one. Writes bench/results/retention-cost[-event][-<interval>].{json,md}.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type Kysely } from 'kysely';
import { createDatabase } from '@effectively/core';
import { enableGenerations, readGenerations, rotateProcessedEvents, type RawMessage } from '@effectively/kafka';
import { createTestSchema, startPostgres, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { messagesWithCopies, sizeRuns, timedConsume, type TimedRun } from './consume-timing';
import { fmtInt, median, sleep } from './stats';
import { runBench } from './main';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    'min-seconds': { type: 'string', default: '3' },
    'batch-size': { type: 'string', default: '500' },
    partitions: { type: 'string', default: '4' },
    window: { type: 'string', default: '4s' },
    interval: { type: 'string', default: '1s' },
    'check-ms': { type: 'string', default: '100' },
    'duplicate-rate': { type: 'string', default: '0.2' },
    mode: { type: 'string', default: 'batch' },
  },
});
const say = (line: string): void => void process.stderr.write(`[retention] ${line}\n`);
const group = 'retention';
const topic = 'retention_topic';
const partitions = Number(args.partitions);
const batchSize = Number(args['batch-size']);
const checkMs = Number(args['check-ms']);
const mode = args.mode === 'event' ? 'event' : 'batch';
const ms = (v: string | undefined): number => {
  const m = /^(\d+)(ms|s|m)$/.exec(v ?? '');
  if (m === null) throw new Error(`durations look like 500ms, 4s, 2m; got ${v}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
};
const windowMs = ms(args.window);
const intervalMs = ms(args.interval);

const makeMessages = (n: number): RawMessage[][] => messagesWithCopies(topic, partitions, n, Number(args['duplicate-rate']));

interface Run extends TimedRun {
  rotations: number;
  forgotten: number;
  liveAtEnd: number;
  /** Milliseconds each switching call took (request to commit): what claims can have waited for it at most. */
  switchMs: number[];
}

async function consume(db: Kysely<unknown>, schema: string, messages: RawMessage[][], rotator?: Kysely<unknown>): Promise<Run> {
  let rotations = 0;
  let forgotten = 0;
  const switchMs: number[] = [];
  // Rotation on a short schedule (what every consumer's rotator or a cron job does, much more often).
  const rotate = async (running: () => boolean): Promise<void> => {
    while (running() && rotator !== undefined) {
      const t = performance.now();
      const r = await rotateProcessedEvents(rotator, { schema });
      if (r.rotated) {
        rotations++;
        switchMs.push(performance.now() - t);
      }
      forgotten += r.forgotten.length;
      await sleep(checkMs);
    }
  };
  const run = await timedConsume({ db, schema, group, topic, mode, batchSize, partitionsConsumedConcurrently: partitions, rotateGenerations: false }, messages, rotator === undefined ? undefined : rotate);
  const state = await readGenerations(db, { schema });
  return { ...run, rotations, forgotten, liveAtEnd: state.live.length, switchMs };
}

/** Brings the generations schema to its steady state before a run: rotations until as many generations are live as the window holds. */
async function steady(db: Kysely<unknown>, schema: string): Promise<void> {
  const want = Math.ceil(windowMs / intervalMs);
  for (let i = 0; i < 1000; i++) {
    await rotateProcessedEvents(db, { schema });
    if ((await readGenerations(db, { schema })).live.length >= want) return;
    await sleep(checkMs);
  }
}

async function main(state: { postgres?: RunningPostgres; schemas: TestSchema[] }): Promise<void> {
  const load = os.loadavg();
  state.postgres = await startPostgres();
  const plain = await createTestSchema(state.postgres.url, 'retention_plain', { max: partitions + 2 });
  state.schemas.push(plain);
  const gens = await createTestSchema(state.postgres.url, 'retention_gens', { max: partitions + 2 });
  state.schemas.push(gens);
  await enableGenerations(gens.db, { schema: gens.schema, windowMs, intervalMs });
  const rotator = createDatabase({ connectionString: state.postgres.url, max: 1, applicationName: 'effectively-bench-rotator' });
  try {
    say(`Postgres: ${state.postgres.source}; window ${windowMs} ms, a generation every ${intervalMs} ms; mode ${mode}`);
    await steady(gens.db, gens.schema);
    const { n, run: m } = await sizeRuns(mode === 'batch' ? 20_000 : 500, Number(args['min-seconds']), 100, (k) => consume(gens.db, gens.schema, makeMessages(k)));
    await consume(plain.db, plain.schema, makeMessages(n));
    say(`warm-up: ${fmtInt(m.items / m.seconds)} events/s; ${fmtInt(n)} messages per run`);
    const arms = { plain: [] as number[], alone: [] as number[], rotating: [] as number[] };
    const ratios: number[] = [];
    const generationsVsPlain: number[] = [];
    const rotationsPerRun: number[] = [];
    const forgottenPerRun: number[] = [];
    const liveAtEnd: number[] = [];
    const switchMs: number[] = [];
    for (let r = 1; r <= Number(args.runs); r++) {
      const p = await consume(plain.db, plain.schema, makeMessages(n));
      await steady(gens.db, gens.schema);
      const a = await consume(gens.db, gens.schema, makeMessages(n));
      await steady(gens.db, gens.schema);
      const b = await consume(gens.db, gens.schema, makeMessages(n), rotator.db);
      arms.plain.push(p.items / p.seconds);
      arms.alone.push(a.items / a.seconds);
      arms.rotating.push(b.items / b.seconds);
      ratios.push(b.items / b.seconds / (a.items / a.seconds));
      generationsVsPlain.push(a.items / a.seconds / (p.items / p.seconds));
      rotationsPerRun.push(b.rotations);
      forgottenPerRun.push(b.forgotten);
      liveAtEnd.push(b.liveAtEnd);
      switchMs.push(...b.switchMs);
      say(`run ${r}: plain ${fmtInt(p.items / p.seconds)}; generations alone ${fmtInt(a.items / a.seconds)} (${a.liveAtEnd} live); while rotating ${fmtInt(b.items / b.seconds)} events/s (${b.rotations} switches, ${b.forgotten} generations forgotten, ${b.liveAtEnd} live at the end)`);
    }
    const report = {
      date: new Date().toISOString(),
      load,
      cpus: os.cpus().length,
      postgres: state.postgres.source,
      settings: { runs: Number(args.runs), messagesPerRun: n, mode, batchSize, partitions, windowMs, intervalMs, checkMs, duplicateRate: Number(args['duplicate-rate']) },
      arms,
      ratios,
      generationsVsPlain,
      rotationsPerRun,
      forgottenPerRun,
      liveAtEnd,
      switchMs,
    };
    const range = (xs: number[], f: (x: number) => string): string => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;
    const x2 = (x: number): string => `${x.toFixed(2)}×`;
    const pct = (x: number): string => `${(x * 100).toFixed(0)} %`;
    const consuming = mode === 'batch' ? `batch ${batchSize}` : 'per-event';
    const md = [
      `Command: \`npm run bench:retention -- --runs ${args.runs} --window ${args.window} --interval ${args.interval} --mode ${mode}\`; Postgres ${state.postgres.source}; ${report.date}; load average at start ${load.map((l) => l.toFixed(2)).join(', ')} on ${report.cpus} CPUs (shared with other work).`,
      '',
      `| consuming (${consuming}, no-op handlers, ${partitions} partitions at once, ${fmtInt(n)} messages per run) | events/s (median) | min–max |`,
      '|---|---:|---:|',
      `| plain \`processed_events\` (no generations), no retention running | ${fmtInt(median(arms.plain))} | ${range(arms.plain, fmtInt)} |`,
      `| generations (window ${windowMs} ms, a generation every ${intervalMs} ms; ${Math.ceil(windowMs / intervalMs)}+ live), no rotation during the run | ${fmtInt(median(arms.alone))} | ${range(arms.alone, fmtInt)} |`,
      `| generations while \`rotateProcessedEvents\` runs every ${checkMs} ms on its own connection | ${fmtInt(median(arms.rotating))} | ${range(arms.rotating, fmtInt)} |`,
      '',
      `While retention runs, throughput is **${x2(median(ratios))}** of the same consumer with rotation paused (median of per-round ratios, ${range(ratios, x2)}): ${median(ratios) >= 1 ? 'no cost measurable at this noise' : `a cost of ${pct(1 - median(ratios))}`}, ` +
        `with ${median(rotationsPerRun)} switches and ${median(forgottenPerRun)} generations emptied by TRUNCATE per run (median; a switch every ${intervalMs} ms is far more often than a deployment rotates). ` +
        `A switching call (forgetting what expired in the same transaction) took ${switchMs.length > 0 ? `${median(switchMs).toFixed(0)} ms (median; ${Math.min(...switchMs).toFixed(0)}–${Math.max(...switchMs).toFixed(0)}, ${switchMs.length} switches)` : '–'} from request to commit, waiting for the claims in flight included: the longest new claims can have waited for it. ` +
        `In the arm with rotation paused the generations grow by the run's own records; while rotating, expired ones are emptied. ` +
        `The claim path on generations itself ran at ${x2(median(generationsVsPlain))} (${range(generationsVsPlain, x2)}) of plain \`processed_events\` (both without retention running): each new id is also looked up in the older live generations.`,
      '',
    ].join('\n');
    const dir = path.join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    // Other schedules than the default (--interval 1s) get files of their own, e.g. retention-cost-5s.md.
    const suffix = `${mode === 'batch' ? '' : '-event'}${intervalMs === 1_000 ? '' : `-${args.interval}`}`;
    writeFileSync(path.join(dir, `retention-cost${suffix}.json`), JSON.stringify(report, null, 2) + '\n');
    writeFileSync(path.join(dir, `retention-cost${suffix}.md`), md);
    process.stdout.write(md);
  } finally {
    await rotator.destroy();
  }
}

const state: { postgres?: RunningPostgres; schemas: TestSchema[] } = { schemas: [] };
runBench(
  () => main(state),
  async () => {
    for (const s of state.schemas) await s.drop().catch(() => undefined);
    await state.postgres?.stop();
  },
  say,
);
