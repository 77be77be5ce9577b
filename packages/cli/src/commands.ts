import { createDatabase, createLogger, InvalidConfigError, migrate } from '@effectively/core';
import { createTopics, produceMessages, readTopic, startKafka, startPostgres, testKafka, uniqueName } from '@effectively/testkit';
import type { ParsedArgs } from './args';

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
