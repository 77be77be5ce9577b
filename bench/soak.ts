// npm run bench:soak -- [--minutes 10] [--rate 3000] [--duplicate-rate 0.2] [--batch-size 500] [--partitions 4]
//                       [--concurrency 4] [--sample-seconds 10] [--warmup-minutes 1] [--drain-seconds 180] [--flat-mib-per-minute 1]
// Soak: batch-mode consumption of a real Kafka topic for --minutes while a bounded producer (this
// process) sends --rate messages/s to it, keyed by event id, --duplicate-rate of them copies of
// one of the last 10,000 ids (same key, same payload, so the same partition). The consumer runs
// in a process of its own (bench/soak-consumer.ts; a no-op-sized handler that adds one to the
// event's row of `soak_applied`) and reports its RSS, heap used and event-loop delay
// (monitorEventLoopDelay, p50/p99/max since its previous line). Every --sample-seconds this
// process adds: the consumer group's lag (high watermarks minus committed offsets), the
// consumer's Postgres connections (pg_stat_activity by its application_name) and throughput.
// When the producer stops, the consumer drains (at most --drain-seconds) and is stopped; totals
// must be exact: every distinct id applied once (one row with n = 1 per id, none missing).
// Verdict: "grew" when RSS rises by more than --flat-mib-per-minute (least-squares slope over
// the samples after --warmup-minutes), else "flat".
// Kafka from KAFKA_BROKERS (else the testkit's), Postgres from DATABASE_URL (else embedded).
// Writes bench/results/soak.{json,md,svg}. Bounded: the producer stops after --minutes; the run
// fails if the consumer does not drain in --drain-seconds.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { createTestSchema, createTopics, startKafka, startPostgres, testKafka, uniqueName, type RunningKafka, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { lineChart } from './report';
import { fmtInt, median, round, sleep } from './stats';
import { runBench, stopServices } from './main';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '3000' },
    'duplicate-rate': { type: 'string', default: '0.2' },
    'batch-size': { type: 'string', default: '500' },
    partitions: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '4' },
    'sample-seconds': { type: 'string', default: '10' },
    'warmup-minutes': { type: 'string', default: '1' },
    'drain-seconds': { type: 'string', default: '180' },
    'flat-mib-per-minute': { type: 'string', default: '1' },
  },
});
const say = (line: string): void => void process.stderr.write(`[soak] ${line}\n`);
const num = (name: keyof typeof args): number => {
  const n = Number(args[name]);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} takes a non-negative number; got ${String(args[name])}`);
  return n;
};
const minutes = num('minutes');
const rate = num('rate');
const dupRate = num('duplicate-rate');
const batchSize = num('batch-size');
const partitions = num('partitions');
const concurrency = num('concurrency');
const sampleMs = num('sample-seconds') * 1_000;
const warmupMinutes = num('warmup-minutes');
const drainMs = num('drain-seconds') * 1_000;
const flatLimit = num('flat-mib-per-minute');
const MiB = 2 ** 20;

interface ChildLine {
  t: number;
  rss: number;
  heapUsed: number;
  external: number;
  eld: { p50: number; p99: number; max: number };
  processed: number;
  duplicates: number;
  deadLettered: number;
  conflicts: number;
  batches: number;
}

interface Sample {
  /** Minutes since the producer started. */
  minute: number;
  phase: 'producing' | 'draining';
  rssMiB: number;
  heapUsedMiB: number;
  eld: ChildLine['eld'];
  connections: number;
  connectionsByState: Record<string, number>;
  lag: number;
  produced: number;
  handled: number;
  /** Messages handled per second since the previous sample. */
  throughput: number;
  loadAverage: number;
}

/** Least-squares slope of y over x; NaN with fewer than 2 points. */
function slope(points: Array<[number, number]>): number {
  if (points.length < 2) return Number.NaN;
  const mx = points.reduce((a, [x]) => a + x, 0) / points.length;
  const my = points.reduce((a, [, y]) => a + y, 0) / points.length;
  const sxy = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return sxx === 0 ? Number.NaN : sxy / sxx;
}

async function main(state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema; child?: ChildProcess }): Promise<void> {
  const loadStart = os.loadavg();
  [state.kafka, state.postgres] = await Promise.all([startKafka(), startPostgres()]);
  const s = (state.schema = await createTestSchema(state.postgres.url, 'soak', { max: 2 }));
  await sql`CREATE TABLE ${sql.id(s.schema, 'soak_applied')} (event_id text PRIMARY KEY, n integer NOT NULL)`.execute(s.db);
  const kafka = testKafka(state.kafka.brokers, 'effectively-soak');
  const [topic] = (await createTopics(kafka, [{ prefix: 'soak', partitions }])) as [string];
  const group = uniqueName('soak');
  const applicationName = `effectively-soak-${s.schema}`;
  say(`Kafka ${state.kafka.source} (${state.kafka.brokers.join(',')}), Postgres ${state.postgres.source}; topic ${topic} (${partitions} partitions), schema ${s.schema}; ${minutes} min at ${fmtInt(rate)} messages/s, ${dupRate * 100} % copies`);

  const child = (state.child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'soak-consumer.ts')], {
    env: { ...process.env, BROKERS: state.kafka.brokers.join(','), DATABASE_URL: state.postgres.url, SCHEMA: s.schema, TOPIC: topic, GROUP: group, BATCH_SIZE: String(batchSize), CONCURRENCY: String(concurrency), APPLICATION_NAME: applicationName, SAMPLE_MS: String(Math.min(sampleMs, 1_000)) },
    stdio: ['ignore', 'pipe', 'inherit'],
  }));
  let childExited: number | null | undefined;
  child.once('exit', (code) => (childExited = code));
  let latest: ChildLine | undefined;
  // The child reports every second; a sample takes the worst event-loop delay of the lines since the previous sample.
  let window: ChildLine[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    latest = JSON.parse(line) as ChildLine;
    window.push(latest);
  });
  while (latest === undefined) {
    if (childExited !== undefined) throw new Error(`the soak consumer exited (code ${childExited}) before reporting; see its error above`);
    await sleep(100);
  }

  const admin = kafka.admin();
  await admin.connect();
  const producer = kafka.producer();
  await producer.connect();
  const lagNow = async (): Promise<number> => {
    const [high, committed] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId: group, topics: [topic] })]);
    const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    return high.reduce((a, p) => a + Math.max(0, Number(p.high) - Math.max(Number(p.low), done.get(p.partition) ?? -1)), 0);
  };
  const connectionsNow = async (): Promise<{ total: number; byState: Record<string, number> }> => {
    const { rows } = await sql<{ state: string | null; n: string }>`SELECT state, count(*)::text AS n FROM pg_stat_activity WHERE application_name = ${applicationName} GROUP BY state`.execute(s.db);
    const byState = Object.fromEntries(rows.map((r) => [r.state ?? 'null', Number(r.n)]));
    return { total: Object.values(byState).reduce((a, b) => a + b, 0), byState };
  };

  // The bounded producer: catches up to rate × elapsed every 100 ms, one awaited send at a time.
  const recent: Array<{ id: string; value: string }> = [];
  let produced = 0;
  let fresh = 0;
  let copies = 0;
  let producing = true;
  const t0 = Date.now();
  const endAt = t0 + minutes * 60_000;
  const producerLoop = (async () => {
    while (Date.now() < endAt) {
      const due = Math.floor(((Date.now() - t0) / 1_000) * rate) - produced;
      if (due > 0) {
        const messages = [];
        for (let i = 0; i < Math.min(due, Math.max(1, rate)); i++) {
          let m: { id: string; value: string };
          if (recent.length > 100 && Math.random() < dupRate) {
            m = recent[Math.floor(Math.random() * recent.length)] as { id: string; value: string };
            copies++;
          } else {
            m = { id: randomUUID(), value: JSON.stringify({ n: fresh, at: Date.now(), pad: 'x'.repeat(64) }) };
            fresh++;
            if (recent.length < 10_000) recent.push(m);
            else recent[fresh % 10_000] = m;
          }
          messages.push({ key: m.id, value: m.value, headers: { 'event-id': m.id } });
        }
        await producer.send({ topic, messages });
        produced += messages.length;
      }
      await sleep(100);
    }
    producing = false;
  })();

  const samples: Sample[] = [];
  let lastHandled = 0;
  let lastT = t0;
  const sample = async (): Promise<Sample> => {
    const [lag, conns] = await Promise.all([lagNow(), connectionsNow()]);
    const c = latest as ChildLine;
    const w = window.length > 0 ? window : [c];
    window = [];
    const handled = c.processed + c.duplicates;
    const now = Date.now();
    const x: Sample = {
      minute: round((now - t0) / 60_000, 3),
      phase: producing ? 'producing' : 'draining',
      rssMiB: round(c.rss / MiB, 1),
      heapUsedMiB: round(c.heapUsed / MiB, 1),
      eld: { p50: round(median(w.map((l) => l.eld.p50)), 2), p99: Math.max(...w.map((l) => l.eld.p99)), max: Math.max(...w.map((l) => l.eld.max)) },
      connections: conns.total,
      connectionsByState: conns.byState,
      lag,
      produced,
      handled,
      throughput: round((handled - lastHandled) / ((now - lastT) / 1_000), 0),
      loadAverage: round(os.loadavg()[0] as number, 2),
    };
    lastHandled = handled;
    lastT = now;
    samples.push(x);
    say(
      `${x.minute.toFixed(2)} min ${x.phase}: RSS ${x.rssMiB} MiB, heap ${x.heapUsedMiB} MiB, loop delay p50/p99/max ${x.eld.p50}/${x.eld.p99}/${x.eld.max} ms, ${x.connections} connections ${JSON.stringify(x.connectionsByState)}, lag ${fmtInt(x.lag)}, ${fmtInt(x.throughput)} msg/s, produced ${fmtInt(produced)}, handled ${fmtInt(handled)}, load ${x.loadAverage}`,
    );
    return x;
  };

  const start = await sample();
  while (producing) {
    const next = t0 + samples.length * sampleMs;
    await Promise.race([sleep(next - Date.now()), producerLoop]);
    if (childExited !== undefined) throw new Error(`the soak consumer exited (code ${childExited}) during the run; see its error above`);
    if (producing || Date.now() >= next) await sample();
  }
  await producerLoop;
  const producedAt = Date.now();
  say(`producer stopped: ${fmtInt(produced)} messages (${fmtInt(fresh)} distinct ids, ${fmtInt(copies)} copies); draining`);
  let end = samples[samples.length - 1] as Sample;
  for (;;) {
    await sleep(Math.min(sampleMs, 2_000));
    const c = latest as ChildLine;
    const lag = await lagNow();
    if (lag === 0 && c.processed + c.duplicates >= produced) break;
    if (Date.now() - producedAt > drainMs) throw new Error(`the consumer did not drain within --drain-seconds ${drainMs / 1000}: lag ${lag}, handled ${c.processed + c.duplicates} of ${produced}`);
  }
  await sleep(1_500); // one more child report after the last commit
  end = await sample();
  const drainSeconds = (Date.now() - producedAt) / 1_000;

  const { rows } = await sql<{ ids: string; applied: string; twice: string }>`
    SELECT count(*)::text AS ids, coalesce(sum(n), 0)::text AS applied, count(*) FILTER (WHERE n > 1)::text AS twice FROM ${sql.id(s.schema, 'soak_applied')}`.execute(s.db);
  const r = rows[0] as { ids: string; applied: string; twice: string };
  const c = latest as ChildLine;
  const totals = { produced, distinct: fresh, copies, rowsApplied: Number(r.ids), applications: Number(r.applied), appliedMoreThanOnce: Number(r.twice), consumerProcessed: c.processed, consumerDuplicates: c.duplicates, deadLettered: c.deadLettered, conflicts: c.conflicts };
  const exact = totals.rowsApplied === fresh && totals.applications === fresh && totals.appliedMoreThanOnce === 0 && c.processed === fresh && c.deadLettered === 0;

  child.kill('SIGTERM');
  await new Promise<void>((resolve) => (childExited !== undefined ? resolve() : child.once('exit', () => resolve())));
  await sleep(500);
  const afterStop = await connectionsNow();
  await producer.disconnect();
  await admin.disconnect();

  const steady = samples.filter((x) => x.minute >= warmupMinutes && x.phase === 'producing');
  const rssSlope = slope(steady.map((x) => [x.minute, x.rssMiB]));
  const heapSlope = slope(steady.map((x) => [x.minute, x.heapUsedMiB]));
  const verdict = Number.isFinite(rssSlope) && rssSlope <= flatLimit ? 'flat' : 'grew';
  const warm = steady[0] ?? start;
  const report = {
    date: new Date().toISOString(),
    load: { start: loadStart, end: os.loadavg() },
    cpus: os.cpus().length,
    kafka: state.kafka.source,
    postgres: state.postgres.source,
    settings: { minutes, rate, duplicateRate: dupRate, batchSize, partitions, partitionsConsumedConcurrently: concurrency, sampleSeconds: sampleMs / 1000, warmupMinutes, flatMiBPerMinute: flatLimit },
    totals,
    exact,
    drainSeconds: round(drainSeconds, 1),
    start,
    warm,
    end,
    connectionsAfterStop: afterStop.total,
    maxConnections: Math.max(...samples.map((x) => x.connections)),
    rssSlopeMiBPerMinute: round(rssSlope, 3),
    heapSlopeMiBPerMinute: round(heapSlope, 3),
    verdict,
    samples,
  };
  const dir = path.join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'soak.json'), JSON.stringify(report, null, 2) + '\n');
  const producingSamples = samples.filter((x) => x.phase === 'producing').slice(1);
  const md = [
    `Command: \`npm run bench:soak -- --minutes ${minutes} --rate ${rate}\` (KAFKA_BROKERS, DATABASE_URL); Kafka ${report.kafka}, Postgres ${report.postgres}; ${report.date}; load average ${loadStart.map((l) => l.toFixed(2)).join(', ')} at start, ${report.load.end.map((l) => l.toFixed(2)).join(', ')} at end, on ${report.cpus} CPUs.`,
    '',
    `Batch mode, batch ${batchSize}, ${partitions} partitions, ${concurrency} consumed at once; the producer sent ${fmtInt(rate)} messages/s for ${minutes} min, ${Math.round(dupRate * 100)} % of them copies of a recent id. The consumer in a process of its own; samples every ${sampleMs / 1000} s.`,
    '',
    `**Verdict: ${verdict}** — RSS slope ${rssSlope.toFixed(2)} MiB/min (least squares over ${steady.length} samples after the ${warmupMinutes}-min warm-up; "flat" means ≤ ${flatLimit} MiB/min); heap used slope ${heapSlope.toFixed(2)} MiB/min.`,
    '',
    '| | start | after warm-up | end (drained) |',
    '|---|---:|---:|---:|',
    `| minute | ${start.minute.toFixed(2)} | ${warm.minute.toFixed(2)} | ${end.minute.toFixed(2)} |`,
    `| RSS | ${start.rssMiB} MiB | ${warm.rssMiB} MiB | ${end.rssMiB} MiB |`,
    `| heap used | ${start.heapUsedMiB} MiB | ${warm.heapUsedMiB} MiB | ${end.heapUsedMiB} MiB |`,
    `| event-loop delay p50 / p99 / max | ${start.eld.p50} / ${start.eld.p99} / ${start.eld.max} ms | ${warm.eld.p50} / ${warm.eld.p99} / ${warm.eld.max} ms | ${end.eld.p50} / ${end.eld.p99} / ${end.eld.max} ms |`,
    `| lag (messages) | ${fmtInt(start.lag)} | ${fmtInt(warm.lag)} | ${fmtInt(end.lag)} |`,
    `| Postgres connections (application_name) | ${start.connections} | ${warm.connections} | ${end.connections} |`,
    '',
    `While producing: throughput ${fmtInt(median(producingSamples.map((x) => x.throughput)))} messages/s (median of samples; ${fmtInt(Math.min(...producingSamples.map((x) => x.throughput)))}–${fmtInt(Math.max(...producingSamples.map((x) => x.throughput)))}), ` +
      `lag at most ${fmtInt(Math.max(...samples.map((x) => x.lag)))}, event-loop delay p99 at most ${Math.max(...samples.map((x) => x.eld.p99))} ms (max ${Math.max(...samples.map((x) => x.eld.max))} ms), ` +
      `connections ${Math.min(...samples.map((x) => x.connections))}–${report.maxConnections} (pool max ${concurrency + 2}); ${afterStop.total} after the consumer stopped. Drained ${drainSeconds.toFixed(0)} s after the producer stopped.`,
    '',
    `Totals ${exact ? '**exact**' : '**WRONG**'}: ${fmtInt(produced)} messages produced, ${fmtInt(fresh)} distinct ids and ${fmtInt(copies)} copies; ${fmtInt(totals.rowsApplied)} ids applied, ${fmtInt(totals.applications)} applications, ${totals.appliedMoreThanOnce} applied more than once; the consumer counted ${fmtInt(c.processed)} processed and ${fmtInt(c.duplicates)} duplicates skipped (${c.deadLettered} dead-lettered, ${c.conflicts} conflicts).`,
    '',
    '| minute | phase | RSS MiB | heap MiB | loop delay p50 / p99 / max ms | connections | lag | messages/s | load |',
    '|---:|---|---:|---:|---|---:|---:|---:|---:|',
    ...samples.map((x) => `| ${x.minute.toFixed(2)} | ${x.phase} | ${x.rssMiB} | ${x.heapUsedMiB} | ${x.eld.p50} / ${x.eld.p99} / ${x.eld.max} | ${x.connections} | ${fmtInt(x.lag)} | ${fmtInt(x.throughput)} | ${x.loadAverage} |`),
    '',
  ].join('\n');
  writeFileSync(path.join(dir, 'soak.md'), md);
  const xLabels = samples.map((x) => x.minute.toFixed(1));
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="900" height="640" viewBox="0 0 900 640" font-family="sans-serif" font-size="12">`, `<rect width="100%" height="100%" fill="#fff"/>`];
  parts.push(...lineChart({ x: 10, y: 10, width: 880, height: 310, title: `Soak: consumer memory over ${minutes} min (verdict ${verdict}, RSS ${rssSlope.toFixed(2)} MiB/min)`, yLabel: 'MiB (x: minutes)', xLabels, series: [{ name: 'RSS', colour: '#2a6fd6', values: samples.map((x) => x.rssMiB) }, { name: 'heap used', colour: '#3c9d5d', values: samples.map((x) => x.heapUsedMiB) }] }));
  parts.push(...lineChart({ x: 10, y: 325, width: 880, height: 310, title: 'Event-loop delay of the consumer process (per sample)', yLabel: 'ms (x: minutes)', xLabels, series: [{ name: 'p50', colour: '#3c9d5d', values: samples.map((x) => x.eld.p50) }, { name: 'p99', colour: '#e08a1e', values: samples.map((x) => x.eld.p99) }] }));
  parts.push('</svg>');
  writeFileSync(path.join(dir, 'soak.svg'), parts.join('\n') + '\n');
  process.stdout.write(md);
  if (!exact) throw new Error('totals are not exact: see bench/results/soak.md');
}

const state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema; child?: ChildProcess } = {};
runBench(
  () => main(state),
  async () => {
    if (state.child !== undefined && state.child.exitCode === null) state.child.kill('SIGTERM');
    await sleep(1_000);
    await stopServices(state);
  },
  say,
);
