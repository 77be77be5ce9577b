import { assertIdentifier, createDatabase, createLogger, InvalidConfigError, migrate } from '@effectively/core';
import { pruneProcessedEvents } from '@effectively/kafka';
import { createRelay, discardParked, listParked, pruneOutbox, relayPrometheusMetrics, requeueParked, type ParkedSelection } from '@effectively/relay';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { createTopics, produceMessages, readTopic, startKafka, startPostgres, testKafka, uniqueName } from '@effectively/testkit';
import type { ParsedArgs } from './args';
import { startStatusServer } from './relay-worker';

/** A CLI command: reads its options, does its job, returns the exit code. */
export type Command = (args: ParsedArgs) => Promise<number>;

const log = createLogger('effectively-cli');

function required(value: string | undefined, what: string, hint: string): string {
  if (value === undefined || value === '') throw new InvalidConfigError(`${what} is required: ${hint}`);
  return value;
}

/** `migrate --schema s`: applies pending migrations to the database at DATABASE_URL. */
export const migrateCommand: Command = async (args) => {
  const url = required(args.options.get('database-url') ?? process.env.DATABASE_URL, 'DATABASE_URL', 'set it or pass --database-url postgres://...');
  const database = createDatabase({ connectionString: url, max: 1, logger: log });
  try {
    const outcome = await migrate(database.db, { schema: args.options.get('schema') ?? process.env.EFFECTIVELY_SCHEMA ?? 'effectively' });
    log.info(outcome, outcome.applied.length > 0 ? 'migrations applied' : 'schema already up to date');
    return 0;
  } finally {
    await database.destroy();
  }
};

/**
 * `smoke`: gets Kafka and Postgres (from the environment or started locally), migrates a
 * fresh schema, round-trips messages through a fresh topic, and reports timings.
 */
export const smokeCommand: Command = async () => {
  const started = Date.now();
  const [kafka, postgres] = await Promise.all([startKafka(), startPostgres()]);
  try {
    log.info({ kafka: { source: kafka.source, brokers: kafka.brokers, version: kafka.version, startupMs: kafka.startupMs }, postgres: { source: postgres.source, startupMs: postgres.startupMs } }, 'services ready');
    const schema = uniqueName('smoke');
    const database = createDatabase({ connectionString: postgres.url, max: 2, logger: log });
    try {
      const outcome = await migrate(database.db, { schema });
      log.info(outcome, 'migrated');
    } finally {
      await database.destroy();
    }
    const client = testKafka(kafka.brokers, 'effectively-smoke');
    const [topic] = await createTopics(client, [{ prefix: 'smoke', partitions: 2 }]);
    const sent = await produceMessages(client, topic as string, Array.from({ length: 100 }, (_, i) => ({ key: `k${i}`, value: `v${i}` })));
    const read = await readTopic(client, topic as string);
    if (read.length !== sent.length) {
      log.error({ sent: sent.length, read: read.length }, 'smoke check failed: messages lost');
      return 1;
    }
    log.info({ topic, messages: read.length, totalMs: Date.now() - started }, 'smoke check passed: Kafka and Postgres work');
    return 0;
  } finally {
    await Promise.allSettled([kafka.stop(), postgres.stop()]);
  }
};

function databaseUrl(args: ParsedArgs): string {
  return required(args.options.get('database-url') ?? process.env.DATABASE_URL, 'DATABASE_URL', 'set it or pass --database-url postgres://...');
}

function schemaOf(args: ParsedArgs): string {
  return assertIdentifier(args.options.get('schema') ?? process.env.EFFECTIVELY_SCHEMA ?? 'effectively', 'schema');
}

function durationMs(value: string | undefined, what: string): number {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(value ?? '');
  if (match === null) throw new InvalidConfigError(`${what} must be a duration like 30m, 12h or 7d, got ${JSON.stringify(value)}.`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

function intOption(args: ParsedArgs, name: string, env: string, fallback: number | undefined): number | undefined {
  const raw = args.options.get(name) ?? process.env[env];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new InvalidConfigError(`--${name} (${env}) must be a non-negative integer, got ${JSON.stringify(raw)}.`);
  return value;
}

/**
 * `relay --schema s [--http-port 9400] [--http-host 0.0.0.0] [--batch-size 500]
 * [--poll-interval-ms 500] [--lease-ms 10000]`: publishes the outbox of `schema` to
 * KAFKA_BROKERS until SIGTERM/SIGINT, serving /metrics and /healthz (`--http-port 0`: off).
 */
export const relayCommand: Command = async (args) => {
  const url = databaseUrl(args);
  const brokers = required(args.options.get('brokers') ?? process.env.KAFKA_BROKERS, 'KAFKA_BROKERS', 'set it or pass --brokers host:port').split(',');
  const httpPort = intOption(args, 'http-port', 'RELAY_HTTP_PORT', 9400) as number;
  if (httpPort > 65535) throw new InvalidConfigError(`--http-port must be at most 65535, got ${httpPort}.`);
  const relayLog = createLogger('effectively-relay');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const database = createDatabase({ connectionString: url, max: 4, logger: relayLog, applicationName: 'effectively-relay' });
  const relay = createRelay({
    brokers,
    db: database.db,
    databaseUrl: url,
    schema: schemaOf(args),
    batchSize: intOption(args, 'batch-size', 'RELAY_BATCH_SIZE', undefined),
    pollIntervalMs: intOption(args, 'poll-interval-ms', 'RELAY_POLL_INTERVAL_MS', undefined),
    leaseMs: intOption(args, 'lease-ms', 'RELAY_LEASE_MS', undefined),
    logger: relayLog,
    metrics: relayPrometheusMetrics(registry),
  });
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const server = httpPort === 0 ? undefined : await startStatusServer(relay, registry, { port: httpPort, host: args.options.get('http-host') ?? process.env.RELAY_HTTP_HOST ?? '0.0.0.0', logger: relayLog });
  await relay.start();
  const signal = await stopped;
  relayLog.info({ signal }, 'stopping the relay');
  await relay.stop();
  await server?.close();
  await database.destroy();
  return 0;
};

function parkedSelection(args: ParsedArgs): ParkedSelection {
  const ids = args.options.get('ids');
  if (ids !== undefined) return { ids: ids.split(',').map((id) => id.trim()).filter((id) => id !== '') };
  if (args.switches.has('all')) {
    const topic = args.options.get('topic');
    return topic === undefined ? { all: true } : { all: true, topic };
  }
  throw new InvalidConfigError('Choose the rows: --ids 12,13 (ids from `effectively outbox parked`) or --all [--topic t].');
}

/**
 * `outbox parked [--limit 100]` lists parked rows (one JSON object per line);
 * `outbox requeue --ids 1,2 | --all [--topic t]` puts them back in the queue (fix the cause first);
 * `outbox discard --ids 1,2 | --all [--topic t]` deletes them for good (the rows behind them flow on).
 */
export const outboxCommand: Command = async (args) => {
  const action = args.positionals[0];
  if (action !== 'parked' && action !== 'requeue' && action !== 'discard') {
    throw new InvalidConfigError(`outbox needs an action: parked, requeue or discard (got ${JSON.stringify(action)}).`);
  }
  const database = createDatabase({ connectionString: databaseUrl(args), max: 1, logger: log });
  const schema = schemaOf(args);
  try {
    if (action === 'parked') {
      for (const row of await listParked(database.db, { schema, limit: intOption(args, 'limit', 'OUTBOX_LIMIT', 100) })) process.stdout.write(`${JSON.stringify(row)}\n`);
    } else if (action === 'requeue') {
      const ids = await requeueParked(database.db, parkedSelection(args), { schema });
      log.info({ schema, requeued: ids.length, ids }, 'parked outbox rows re-queued');
    } else {
      const ids = await discardParked(database.db, parkedSelection(args), { schema });
      log.info({ schema, discarded: ids.length, ids }, 'parked outbox rows discarded');
    }
    return 0;
  } finally {
    await database.destroy();
  }
};

/**
 * `prune --processed-events 14d --outbox 7d`: deletes old processed-event records and published
 * outbox rows in small batches. The processed-events window must exceed the longest replay.
 */
export const pruneCommand: Command = async (args) => {
  const database = createDatabase({ connectionString: databaseUrl(args), max: 1, logger: log });
  const schema = schemaOf(args);
  try {
    const events = args.options.get('processed-events');
    const outbox = args.options.get('outbox');
    if (events === undefined && outbox === undefined) throw new InvalidConfigError('prune needs --processed-events <window> and/or --outbox <window>, e.g. --processed-events 14d.');
    if (events !== undefined) log.info({ schema, deleted: await pruneProcessedEvents(database.db, { schema, olderThanMs: durationMs(events, '--processed-events') }) }, 'processed events pruned');
    if (outbox !== undefined) log.info({ schema, ...(await pruneOutbox(database.db, { schema, olderThanMs: durationMs(outbox, '--outbox') })) }, 'outbox rows marked published pruned');
    return 0;
  } finally {
    await database.destroy();
  }
};
