import { createDatabase, createLogger, InvalidConfigError } from '@effectively/core';
import { createRelay, relayPrometheusMetrics } from '@effectively/relay';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { defineCommand, ExitCode } from '../command';
import { intValue } from '../options';
import { startStatusServer } from '../relay-worker';
import { configFile, DATABASE_OPTIONS, databaseUrl, KAFKA_OPTIONS, kafkaConnection, relayClient, schemaName } from '../settings';

/**
 * `effectively relay --schema NAME`: publishes the outbox of NAME to Kafka until SIGTERM or
 * SIGINT (finish the claim, hand the lanes back, exit 0), serving `/metrics` and `/healthz`.
 * Logs are pino JSON on stdout.
 */
export const relayCommand = defineCommand({
  name: 'relay',
  summary: 'publish the outbox to Kafka until SIGTERM; serves /metrics and /healthz',
  usage: '--schema NAME [--brokers H:P,…] [--client kafkajs|platformatic] [--config FILE] [--http-port 9400] [options]',
  description: [
    'Runs until SIGTERM or SIGINT, then finishes its claim, hands its lanes back and exits 0.',
    'Run it as the process that receives the signal: `exec effectively relay …` in a shell',
    'script, `node node_modules/@effectively/cli/dist/bin.js relay …` or the bin directly as a',
    'container command; npx does not forward SIGTERM to it.',
    '',
    'Kafka TLS and SASL come from the environment (KAFKA_SSL, KAFKA_SSL_CA, KAFKA_SSL_CERT,',
    'KAFKA_SSL_KEY, KAFKA_SSL_KEY_PASSPHRASE, KAFKA_SSL_SERVERNAME, KAFKA_SSL_REJECT_UNAUTHORIZED,',
    'KAFKA_SASL_MECHANISM=plain|scram-sha-256|scram-sha-512, KAFKA_SASL_USERNAME,',
    'KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE) or from "kafka" in the --config file.',
    'The same settings apply to either Kafka client (--client); platformatic needs Node.js 22.22+',
    'and `npm install @platformatic/kafka` beside @effectively/cli.',
    'Logs: pino JSON on stdout at LOG_LEVEL (info).',
  ].join('\n'),
  options: {
    ...DATABASE_OPTIONS,
    ...KAFKA_OPTIONS,
    client: { type: 'string', value: 'NAME', description: 'Kafka client: kafkajs or platformatic (env EFFECTIVELY_KAFKA_CLIENT, config "kafka.client"; default kafkajs)' },
    'http-port': { type: 'string', value: 'PORT', description: 'port of /metrics and /healthz; 0 = off (env RELAY_HTTP_PORT; default 9400)' },
    'http-host': { type: 'string', value: 'HOST', description: 'address to listen on (env RELAY_HTTP_HOST; default 0.0.0.0)' },
    'batch-size': { type: 'string', value: 'N', description: 'rows per claim (env RELAY_BATCH_SIZE; default 500)' },
    'poll-interval-ms': { type: 'string', value: 'MS', description: 'poll interval behind LISTEN (env RELAY_POLL_INTERVAL_MS; default 500)' },
    'lease-ms': { type: 'string', value: 'MS', description: 'lane lease (env RELAY_LEASE_MS; default 10000)' },
  },
  async run({ values, io }) {
    const env = io.env;
    const config = configFile(values, env);
    const url = databaseUrl(values, env, config);
    const schema = schemaName(values, env, config);
    const kafka = kafkaConnection(values, env, config);
    const client = relayClient(values, env, config, kafka);
    const httpPort = intValue(values['http-port'], env, 'http-port', 'RELAY_HTTP_PORT') ?? 9400;
    if (httpPort > 65535) throw new InvalidConfigError(`--http-port must be at most 65535, got ${httpPort}.`);
    const batchSize = intValue(values['batch-size'], env, 'batch-size', 'RELAY_BATCH_SIZE');
    const pollIntervalMs = intValue(values['poll-interval-ms'], env, 'poll-interval-ms', 'RELAY_POLL_INTERVAL_MS');
    const leaseMs = intValue(values['lease-ms'], env, 'lease-ms', 'RELAY_LEASE_MS');
    const log = createLogger('effectively-relay', env['LOG_LEVEL'] ?? 'info');
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const database = createDatabase({ connectionString: url, max: 4, logger: log, applicationName: 'effectively-relay' });
    try {
      const relay = createRelay({
        brokers: kafka.brokers,
        ...(kafka.clientId === undefined ? {} : { clientId: kafka.clientId }),
        ...client,
        db: database.db,
        databaseUrl: url,
        schema,
        ...(batchSize === undefined ? {} : { batchSize }),
        ...(pollIntervalMs === undefined ? {} : { pollIntervalMs }),
        ...(leaseMs === undefined ? {} : { leaseMs }),
        logger: log,
        metrics: relayPrometheusMetrics(registry),
      });
      const stopped = new Promise<string>((resolve) => {
        process.once('SIGTERM', () => resolve('SIGTERM'));
        process.once('SIGINT', () => resolve('SIGINT'));
      });
      const host = values['http-host'] ?? env['RELAY_HTTP_HOST'] ?? '0.0.0.0';
      const server = httpPort === 0 ? undefined : await startStatusServer(relay, registry, { port: httpPort, host, logger: log });
      try {
        await relay.start();
        const signal = await stopped;
        log.info({ signal }, 'stopping the relay');
        await relay.stop();
      } finally {
        await server?.close();
      }
      return ExitCode.ok;
    } finally {
      await database.destroy();
    }
  },
});
