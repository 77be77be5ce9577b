/**
 * Starts the payments example: `DATABASE_URL=postgres://… PORT=3000 npm start`.
 * Migrates the schema (`SCHEMA`, default `payments_demo`) on start, prunes expired keys hourly.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import { createDatabase, createLogger, InvalidConfigError, PrometheusMetrics } from '@effectively/core';
import { createIdempotency, IDEMPOTENCY_METRICS } from '@effectively/http';
import { createPaymentsApp } from './app';
import { prepareSchema } from './schema';

async function main(): Promise<void> {
  const logger = createLogger('example-payments');
  const url = process.env.DATABASE_URL;
  if (url === undefined || url === '') throw new InvalidConfigError('DATABASE_URL is required, e.g. DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/effectively npm start');
  const port = Number(process.env.PORT ?? 3000);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new InvalidConfigError(`PORT must be a TCP port number, got ${JSON.stringify(process.env.PORT)}.`);
  const schema = process.env.SCHEMA ?? 'payments_demo';

  const database = createDatabase({ connectionString: url, logger, applicationName: 'example-payments' });
  await prepareSchema(database.db, schema);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const idempotency = createIdempotency({ db: database.db, schema, logger, metrics: new PrometheusMetrics(registry, IDEMPOTENCY_METRICS) });
  const app = createPaymentsApp({ idempotency, schema, registry, logger });

  const pruner = setInterval(() => {
    idempotency.prune().catch((err: unknown) => logger.warn({ err }, 'pruning expired idempotency keys failed'));
  }, 60 * 60 * 1000);
  pruner.unref();

  const server = app.listen(port, () => {
    const address = server.address();
    logger.info({ port: typeof address === 'object' && address !== null ? address.port : port, schema }, 'payments API listening');
  });
  const stop = (): void => {
    clearInterval(pruner);
    server.close(() => void database.destroy());
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
