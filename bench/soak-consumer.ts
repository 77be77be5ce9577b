// The consumer under soak (bench/soak.ts), in a process of its own so its memory and event loop
// are measured alone. Batch mode; each event adds one to its row of `soak_applied` (so a copy
// applied twice shows as n = 2). Configured from the environment; prints one JSON line every
// SAMPLE_MS: {"t", "rss", "heapUsed", "external", "eld": {"p50","p99","max"} (ms beyond the 10 ms sampling
// interval, since the last line), "processed", "duplicates", "deadLettered", "conflicts", "batches"}.
// SIGTERM: stop the consumer, close the pool, print a last line, exit 0.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { sql, type Kysely, type Transaction } from 'kysely';
import { createDatabase, silentLogger } from '@effectively/core';
import { IdempotentConsumer, type ConsumedEvent } from '@effectively/kafka';

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is required (bench/soak-consumer.ts is started by bench/soak.ts)`);
  return value;
};

async function apply(trx: Transaction<unknown> | Kysely<unknown>, schema: string, events: Array<ConsumedEvent<unknown>>): Promise<void> {
  if (events.length === 0) return;
  await sql`INSERT INTO ${sql.id(schema, 'soak_applied')} (event_id, n)
            SELECT id, 1 FROM unnest(${events.map((e) => e.id)}::text[]) AS id
            ON CONFLICT (event_id) DO UPDATE SET n = ${sql.id(schema, 'soak_applied')}.n + 1`.execute(trx);
}

async function main(): Promise<void> {
  const schema = env('SCHEMA');
  const concurrency = Number(env('CONCURRENCY'));
  const database = createDatabase({ connectionString: env('DATABASE_URL'), max: concurrency + 2, applicationName: env('APPLICATION_NAME') });
  const consumer = new IdempotentConsumer<unknown>({
    brokers: env('BROKERS').split(','),
    groupId: env('GROUP'),
    topics: [env('TOPIC')],
    db: database.db,
    schema,
    mode: 'batch',
    batchSize: Number(env('BATCH_SIZE')),
    partitionsConsumedConcurrently: concurrency,
    fromBeginning: true,
    handler: (event, ctx) => apply(ctx.trx, schema, [event]),
    batchHandler: (events, ctx) => apply(ctx.trx, schema, events),
    logger: silentLogger(),
  });
  // Node's histogram records each whole timer interval (the 10 ms resolution plus the delay): the interval is subtracted.
  const resolutionMs = 10;
  const eld = monitorEventLoopDelay({ resolution: resolutionMs });
  eld.enable();
  const s = consumer.stats;
  const report = (): void => {
    const m = process.memoryUsage();
    const ms = (ns: number): number => (eld.count === 0 ? 0 : Math.max(0, Math.round((ns / 1e6 - resolutionMs) * 100) / 100));
    process.stdout.write(
      `${JSON.stringify({ t: Date.now(), rss: m.rss, heapUsed: m.heapUsed, external: m.external, eld: { p50: ms(eld.percentile(50)), p99: ms(eld.percentile(99)), max: ms(eld.max) }, processed: s.processed, duplicates: s.duplicates, deadLettered: s.deadLettered, conflicts: s.conflicts, batches: s.batches })}\n`,
    );
    eld.reset();
  };
  const timer = setInterval(report, Number(env('SAMPLE_MS')));
  process.once('SIGTERM', () => {
    clearInterval(timer);
    void consumer
      .stop()
      .then(() => database.destroy())
      .then(report)
      .finally(() => process.exit(0));
  });
  report();
  await consumer.start();
}

void main().catch((error: unknown) => {
  process.stderr.write(`soak consumer failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
