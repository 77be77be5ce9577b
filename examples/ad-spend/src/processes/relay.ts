// The outbox relay as a process: publishes the aggregator's budget alerts. Env: see ../env.ts.
import { OutboxRelay } from '@effectively/relay';
import { numFrom, pipelineEnv } from '../env';
import { runProcess } from './run';

const config = pipelineEnv();
runProcess('relay', config.databaseUrl, async (database, logger) => {
  const relay = new OutboxRelay({
    brokers: config.brokers,
    db: database.db,
    databaseUrl: config.databaseUrl,
    schema: config.schema,
    pollIntervalMs: numFrom(process.env, 'POLL_INTERVAL_MS', 100),
    retryDelayMs: 200,
    maxRetryDelayMs: 2_000,
    logger,
  });
  await relay.start();
  return { stop: () => relay.stop(), stats: () => ({ ...relay.stats }) };
});
