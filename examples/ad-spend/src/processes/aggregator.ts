// The aggregator as a process. Env: see ../env.ts; BATCH_SIZE (default 500); for crash tests,
// CRASH_AT=before-db-commit|after-db-commit|after-offset-commit with CRASH_ON_CHUNK=n kills this
// process with SIGKILL at that point of its n-th chunk.
import type { ConsumerHooks, HookContext } from '@effectively/kafka';
import { numFrom, pipelineEnv } from '../env';
import { createAggregator } from '../aggregator';
import { runProcess } from './run';

const config = pipelineEnv();
runProcess('aggregator', config.databaseUrl, async (database, logger) => {
  const crashAt = process.env.CRASH_AT ?? '';
  const crashOn = numFrom(process.env, 'CRASH_ON_CHUNK', 1);
  // Chunks of several partitions run at once, so the n-th chunk's afterDbCommit can come after
  // other chunks' beforeDbCommit: each chunk keeps the number it was given when it started.
  let chunks = 0;
  const numbers = new Map<string, number>();
  const key = (ctx: HookContext): string => `${ctx.topic}/${ctx.partition}/${ctx.firstOffset}`;
  const kill = (point: string, chunk: number): void => {
    if (crashAt === point && chunk === crashOn) {
      process.stdout.write(`@crashing ${JSON.stringify({ point, chunk })}\n`);
      process.kill(process.pid, 'SIGKILL');
    }
  };
  const hooks: ConsumerHooks = {
    beforeDbCommit: (ctx) => {
      chunks++;
      numbers.set(key(ctx), chunks);
      kill('before-db-commit', chunks);
    },
    afterDbCommit: (ctx) => {
      const chunk = numbers.get(key(ctx)) ?? 0;
      numbers.delete(key(ctx));
      kill('after-db-commit', chunk);
    },
    // Offsets are committed per fetched batch: this fires on the first commit at or after chunk n.
    afterOffsetCommit: () => {
      if (chunks >= crashOn) kill('after-offset-commit', crashOn);
    },
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
