import { randomBytes } from 'node:crypto';
import { createDatabase, createOutbox, migrate } from '@effectively/core';
import { createRelay, outboxBacklog } from '@effectively/relay';
import { Kafka, logLevel } from 'kafkajs';
import { sql } from 'kysely';
import { defineCommand, ExitCode } from '../command';
import { commandLogger, intValue } from '../options';
import { configFile, databaseUrl, kafkaConnection, KAFKA_OPTIONS } from '../settings';

const MESSAGES = 100;

/**
 * `effectively smoke`: checks that the configured Postgres and Kafka work together: migrates a
 * throw-away schema, writes messages to its outbox, relays them to a throw-away topic, checks
 * the topic holds them, then drops the schema and deletes the topic (also when a step fails).
 */
export const smokeCommand = defineCommand({
  name: 'smoke',
  summary: 'check Postgres and Kafka end to end with a throw-away schema and topic, then remove both',
  usage: '[--database-url URL] [--brokers H:P,…] [--config FILE] [--timeout-ms 60000]',
  description: [
    'Creates schema effectively_smoke_<random> and topic effectively-smoke-<random>, writes',
    `${MESSAGES} outbox rows, relays them and checks the topic's offsets; both are removed at the end.`,
    'Needs the right to create and delete topics. Kafka TLS/SASL as for `relay`.',
  ].join('\n'),
  options: {
    'database-url': { type: 'string', value: 'URL', description: 'Postgres connection string (env DATABASE_URL, config "databaseUrl")' },
    config: { type: 'string', value: 'FILE', description: 'JSON configuration file (env EFFECTIVELY_CONFIG)' },
    ...KAFKA_OPTIONS,
    'timeout-ms': { type: 'string', value: 'MS', description: 'give up after MS (default 60000)' },
  },
  async run({ values, io }) {
    const started = Date.now();
    const config = configFile(values, io.env);
    const url = databaseUrl(values, io.env, config);
    const connection = kafkaConnection(values, io.env, config);
    const timeoutMs = intValue(values['timeout-ms'], {}, 'timeout-ms', 'timeout-ms') ?? 60_000;
    const suffix = randomBytes(5).toString('hex');
    const schema = `effectively_smoke_${suffix}`;
    const topic = `effectively-smoke-${suffix}`;
    const say = (text: string): void => void io.stdout.write(`${text} (${Date.now() - started} ms)\n`);
    const logger = commandLogger(io.env);
    const kafka = new Kafka({ ...connection.settings, brokers: connection.brokers, clientId: connection.clientId ?? 'effectively-smoke', logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    const database = createDatabase({ connectionString: url, max: 3, logger, applicationName: 'effectively-smoke' });
    let topicCreated = false;
    try {
      await migrate(database.db, { schema });
      say(`postgres: migrated schema ${schema}`);
      await admin.connect();
      await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
      topicCreated = true;
      say(`kafka: created topic ${topic}`);
      const outbox = createOutbox({ schema });
      await database.db.transaction().execute((trx) => outbox.publish(trx, Array.from({ length: MESSAGES }, (_, i) => ({ topic, key: `k${i % 10}`, value: { i } }))));
      const relay = createRelay({ brokers: connection.brokers, clientId: `effectively-smoke-${suffix}`, kafka: connection.settings, db: database.db, databaseUrl: url, schema, logger });
      await relay.start();
      try {
        const deadline = started + timeoutMs;
        while ((await outboxBacklog(database.db, schema)).pending > 0) {
          if (Date.now() > deadline) throw new Error(`the relay did not publish ${MESSAGES} outbox rows within ${timeoutMs} ms`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      } finally {
        await relay.stop();
      }
      const offsets = await admin.fetchTopicOffsets(topic);
      const stored = offsets.reduce((sum, p) => sum + (Number(p.high) - Number(p.low)), 0);
      if (stored !== MESSAGES) {
        io.stderr.write(`effectively smoke: wrote ${MESSAGES} outbox rows but topic ${topic} holds ${stored} messages\n`);
        return ExitCode.failed;
      }
      say(`relay: published ${MESSAGES} outbox rows to ${topic}`);
      return ExitCode.ok;
    } finally {
      const cleanup = await Promise.allSettled([
        topicCreated ? admin.deleteTopics({ topics: [topic] }) : Promise.resolve(),
        sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(database.db),
      ]);
      await Promise.allSettled([admin.disconnect(), database.destroy()]);
      const failed = cleanup.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      for (const f of failed) io.stderr.write(`effectively smoke: cleanup failed, remove schema ${schema} / topic ${topic} by hand: ${String((f.reason as Error)?.message ?? f.reason)}\n`);
      if (failed.length === 0) say(`removed schema ${schema}${topicCreated ? ` and topic ${topic}` : ''}`);
    }
  },
});
