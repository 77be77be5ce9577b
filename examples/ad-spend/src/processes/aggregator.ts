// The aggregator as a process. Env: see ../env.ts; BATCH_SIZE (default 500); for crash tests,
// CRASH_AT=before-db-commit|after-db-commit|after-offset-commit with CRASH_ON_CHUNK=n kills this
// process with SIGKILL at that point of its n-th chunk.
import type { ConsumerHooks } from '@effectively/kafka';
import { numFrom, pipelineEnv } from '../env';
import { createAggregator } from '../aggregator';
import { runProcess } from './run';

const config = pipelineEnv();
runProcess('aggregator', config.databaseUrl, async (database, logger) => {
  const crashAt = process.env.CRASH_AT ?? '';
  const crashOn = numFrom(process.env, 'CRASH_ON_CHUNK', 1);
  let chunks = 0;
  const kill = (point: string): void => {
    if (crashAt === point && chunks === crashOn) {
      process.stdout.write(`@crashing ${JSON.stringify({ point, chunk: chunks })}\n`);
      process.kill(process.pid, 'SIGKILL');
    }
  };
  const hooks: ConsumerHooks = {
    beforeDbCommit: () => {
      chunks++;
      kill('before-db-commit');
    },
    afterDbCommit: () => kill('after-db-commit'),
    afterOffsetCommit: () => kill('after-offset-commit'),
  };
  const consumer = createAggregator({
    brokers: config.brokers,
    db: database.db,
    schema: config.schema,
    spendTopic: config.spendTopic,
    alertsTopic: config.alertsTopic,
    groupId: config.aggregatorGroup,
    batchSize: numFrom(process.env, 'BATCH_SIZE', 500),
    sessionTimeoutMs: numFrom(process.env, 'SESSION_TIMEOUT_MS', 10_000),
    hooks,
    logger,
  });
  await consumer.start();
  return { stop: () => consumer.stop(), stats: () => ({ ...consumer.stats }) };
});
