// The notifier as a process. Env: see ../env.ts.
import { numFrom, pipelineEnv } from '../env';
import { createNotifier } from '../notifier';
import { runProcess } from './run';

const config = pipelineEnv();
runProcess('notifier', config.databaseUrl, async (database, logger) => {
  const consumer = createNotifier({
    brokers: config.brokers,
    db: database.db,
    schema: config.schema,
    alertsTopic: config.alertsTopic,
    groupId: config.notifierGroup,
    sessionTimeoutMs: numFrom(process.env, 'SESSION_TIMEOUT_MS', 10_000),
    logger,
  });
  await consumer.start();
  return { stop: () => consumer.stop(), stats: () => ({ ...consumer.stats }) };
});
