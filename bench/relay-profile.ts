// npm run bench:relay-profile -- [--rows 100000] [--runs 2] [--batch 500] [--parallel n]
// Where the relay's time goes while it drains a backlog of committed rows (the bench's relay
// variant: 50 keys, ~200-byte JSON values, a 3-partition topic), back-to-back drainOnce() calls:
//  - each Postgres statement's round trip as the relay's connections see it (BEGIN, set_config,
//    lane lock, fetch, delete, COMMIT, probe, rebalance), summed per kind;
//  - each Kafka send (ProducerClient.sendBatch) round trip;
//  - the Postgres backends' CPU (the relay pool's server processes, from /proc) and this
//    process's CPU.
// --cpu-prof <file> writes a V8 CPU profile of the drains alone (not the set-up), for where the
// Node CPU goes (open it in Chrome DevTools, or sum self time per function).
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { createDatabase, createOutbox } from '@effectively/core';
import { createKafkajsProducer, OutboxRelay, type ProducerClient } from '@effectively/relay';
import { createTestSchema, createTopics, startKafka, startPostgres, testKafka, uniqueName, type RunningKafka, type RunningPostgres, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import type { PoolClient } from 'pg';
import { runBench, stopServices } from './main';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '2' },
    batch: { type: 'string', default: '500' },
    parallel: { type: 'string' },
    'cpu-prof': { type: 'string' },
  },
});
const say = (line: string): void => void process.stderr.write(`[relay-profile] ${line}\n`);

/** Round trips per kind: count and total ms. */
class Timings {
  readonly kinds = new Map<string, { n: number; ms: number }>();
  add(kind: string, ms: number): void {
    const t = this.kinds.get(kind) ?? { n: 0, ms: 0 };
    t.n++;
    t.ms += ms;
    this.kinds.set(kind, t);
  }
  clear(): void {
    this.kinds.clear();
  }
}

function kindOf(text: string): string {
  const q = text.trim().replace(/\s+/g, ' ');
  if (/^begin/i.test(q)) return 'BEGIN';
  if (/^commit/i.test(q)) return 'COMMIT';
  if (/^rollback/i.test(q)) return 'ROLLBACK';
  if (q.startsWith('WITH settings AS MATERIALIZED')) return 'claim: settings + lock lanes';
  if (q.includes("set_config('idle_in_transaction_session_timeout'")) return 'claim: set_config';
  if (/^UPDATE \S+outbox_lanes" SET lease_until = now\(\) \+ \$1::float8 \* interval '1 millisecond' WHERE lane IN/.test(q)) return 'claim: lock lanes';
  if (q.startsWith('WITH deleted AS') && q.includes('AS created_ms')) return 'claim: delete previous + read next';
  if (q.includes('AS created_ms')) return 'claim: read';
  if (/^DELETE FROM \S+"outbox" WHERE id = ANY/.test(q)) return 'claim: delete acked';
  if (q.includes('SELECT 1 AS one')) return 'probe (anyDue)';
  if (q.includes('outbox_relays') || q.includes("set_config('lock_timeout', '2s'") || q.includes('outbox_lanes')) return 'rebalance';
  if (q.includes('count(*)')) return 'backlog';
  return `other: ${q.slice(0, 60)}`;
}

/** utime + stime of a process, in ms (Linux /proc). */
function cpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

async function main(state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema }): Promise<void> {
  [state.kafka, state.postgres] = await Promise.all([startKafka(), startPostgres()]);
  const schema = (state.schema = await createTestSchema(state.postgres.url, 'relayprof'));
  const [topic] = await createTopics(testKafka(state.kafka.brokers), [{ prefix: 'relayprof', partitions: 3 }]);
  const appName = uniqueName('relayprof');
  const relayDb = createDatabase({ connectionString: state.postgres.url, max: 10, applicationName: appName });
  const pg = new Timings();
  const kafka = new Timings();
  relayDb.pool.on('connect', (client: PoolClient) => {
    const query = client.query.bind(client) as (...a: unknown[]) => Promise<unknown>;
    (client as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
      const text = typeof a[0] === 'string' ? a[0] : ((a[0] as { text?: string }).text ?? '');
      const t = performance.now();
      const p = query(...a);
      if (p instanceof Promise) void p.then(() => pg.add(kindOf(text), performance.now() - t), () => undefined);
      return p;
    };
  });
  const producerClient = (settings: Parameters<typeof createKafkajsProducer>[0]): ProducerClient => {
    const c = createKafkajsProducer(settings);
    return {
      ...c,
      sendBatch: async (batches) => {
        const t = performance.now();
        await c.sendBatch(batches);
        kafka.add('sendBatch', performance.now() - t);
      },
    };
  };
  const rows = Number(args.rows);
  const payload = (i: number): string => JSON.stringify({ type: 'campaign.budget_exceeded', campaign_id: `cmp-${i % 50}`, day: '2026-01-05', daily_budget: 1_000_000_000, total: 1_000_000_000 + i, note: 'x'.repeat(60) });
  const outbox = createOutbox({ schema: schema.schema });
  const profiler = args['cpu-prof'] === undefined ? undefined : new Session();
  if (profiler !== undefined) {
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.setSamplingInterval', { interval: 500 });
  }
  try {
    for (let run = 1; run <= Number(args.runs); run++) {
      const relay = new OutboxRelay({
        brokers: state.kafka.brokers,
        db: relayDb.db,
        databaseUrl: state.postgres.url,
        schema: schema.schema,
        batchSize: Number(args.batch),
        ...(args.parallel === undefined ? {} : { parallelClaims: Number(args.parallel) }),
        listen: false,
        producerClient,
      });
      await outbox.publish(schema.db, [{ eventId: uniqueName('warm'), topic: topic as string, key: 'warm', value: payload(0) }]);
      while (relay.stats.published === 0) await relay.drainOnce();
      for (let i = 0; i < rows; i += 1_000) {
        await outbox.publish(schema.db, Array.from({ length: Math.min(1_000, rows - i) }, (_, k) => ({ eventId: uniqueName(`o${i + k}`), topic: topic as string, key: `cmp-${(i + k) % 50}`, value: payload(i + k) })));
      }
      const { rows: backends } = await sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE application_name = ${appName}`.execute(schema.db);
      pg.clear();
      kafka.clear();
      const pgCpu0 = backends.reduce((a, b) => a + cpuMs(b.pid), 0);
      const nodeCpu0 = process.cpuUsage();
      const load = os.loadavg()[0];
      await profiler?.post('Profiler.start');
      const started = performance.now();
      let cycles = 0;
      while (relay.stats.published < rows + 1) {
        await relay.drainOnce();
        cycles++;
      }
      const wall = performance.now() - started;
      const nodeCpu = process.cpuUsage(nodeCpu0);
      if (profiler !== undefined) {
        const { profile } = await profiler.post('Profiler.stop');
        const file = `${args['cpu-prof'] as string}.run${run}.cpuprofile`;
        writeFileSync(file, JSON.stringify(profile));
        say(`wrote ${file}`);
      }
      const { rows: backends2 } = await sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE application_name = ${appName}`.execute(schema.db);
      const pgCpu = backends2.reduce((a, b) => a + cpuMs(b.pid), 0) - pgCpu0;
      await relay.stop();
      const lines = [
        `run ${run}: ${rows} rows in ${(wall / 1000).toFixed(2)} s = ${Math.round((rows * 1000) / wall)} rows/s, ${cycles} cycles, load ${load?.toFixed(1)}; backends ${backends.length} -> ${backends2.length}`,
        `  Node CPU ${((nodeCpu.user + nodeCpu.system) / 1000 / wall).toFixed(2)} cores (${((nodeCpu.user + nodeCpu.system) / rows).toFixed(1)} us/row); Postgres backends CPU ${(pgCpu / wall).toFixed(2)} cores (${((pgCpu * 1000) / rows).toFixed(1)} us/row)`,
        `  per cycle: wall ${(wall / cycles).toFixed(2)} ms`,
        ...[...pg.kinds, ...kafka.kinds]
          .sort((a, b) => b[1].ms - a[1].ms)
          .map(([kind, t]) => `  ${kind.padEnd(24)} n=${String(t.n).padStart(6)}  total ${(t.ms / 1000).toFixed(2).padStart(6)} s  mean ${(t.ms / t.n).toFixed(2).padStart(7)} ms  (${((t.ms / wall) * 100).toFixed(0)} % of wall, summed over connections)`),
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
  } finally {
    await relayDb.destroy();
  }
}

const state: { kafka?: RunningKafka; postgres?: RunningPostgres; schema?: TestSchema } = {};
runBench(() => main(state), () => stopServices(state), say);
