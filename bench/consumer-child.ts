// One aggregator (idempotent consumer) in a process of its own, for the bench's multi-process
// variant. Configured from the environment; prints one JSON line every 100 ms:
// {"t": epoch ms, "n": distinct events applied (processed + dead-lettered), "first": epoch ms of the first message or 0}.
// SIGTERM: stop the consumer, close the pool, exit 0.
import { createDatabase, silentLogger } from '@effectively/core';
import { createAggregator } from '../examples/ad-spend/src/aggregator';

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is required`);
  return value;
};

async function main(): Promise<void> {
  const concurrency = Number(env('CONCURRENCY'));
  const database = createDatabase({ connectionString: env('DATABASE_URL'), max: concurrency + 2, applicationName: 'bench-child' });
  let first = 0;
  const consumer = createAggregator({
    brokers: env('BROKERS').split(','),
    db: database.db,
    schema: env('SCHEMA'),
    spendTopic: env('TOPIC'),
    alertsTopic: env('ALERTS_TOPIC'),
    groupId: env('GROUP'),
    mode: env('MODE') === 'event' ? 'event' : 'batch',
    batchSize: Number(env('BATCH_SIZE')),
    partitionsConsumedConcurrently: concurrency,
    onReceived: () => {
      if (first === 0) first = Date.now();
    },
    logger: silentLogger(),
  });
  const s = consumer.stats;
  const report = (): void => void process.stdout.write(`${JSON.stringify({ t: Date.now(), n: s.processed + s.deadLettered, first })}\n`);
  const timer = setInterval(report, 100);
  process.once('SIGTERM', () => {
    clearInterval(timer);
    void consumer
      .stop()
      .then(() => database.destroy())
      .finally(() => process.exit(0));
  });
  await consumer.start();
}

void main().catch((error: unknown) => {
  process.stderr.write(`bench consumer child failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
