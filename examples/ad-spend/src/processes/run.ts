import { createDatabase, createLogger, type Database, type Logger } from '@effectively/core';
import { report } from '../env';

/** What a long-running part hands back: a stop function and counters to report. */
export interface Running {
  stop(): Promise<void>;
  stats(): Record<string, unknown>;
}

/**
 * Runs one part of the pipeline as a process: prints `@started`, then `@stats {…}` every
 * `STATS_INTERVAL_MS` (default 500) for its supervisor, and stops cleanly on SIGTERM/SIGINT.
 */
export function runProcess(name: string, databaseUrl: string, start: (db: Database, logger: Logger) => Promise<Running>): void {
  const logger = createLogger(name, process.env.LOG_LEVEL ?? 'warn');
  const database = createDatabase({ connectionString: databaseUrl, max: 4, applicationName: `ad-spend-${name}`, logger });
  const main = async (): Promise<void> => {
    const running = await start(database, logger);
    report('started', { name, pid: process.pid });
    const timer = setInterval(() => report('stats', running.stats()), Number(process.env.STATS_INTERVAL_MS ?? '500'));
    let stopping = false;
    const shutdown = (): void => {
      if (stopping) return;
      stopping = true;
      clearInterval(timer);
      void running
        .stop()
        .then(() => report('stats', running.stats()))
        .then(() => database.destroy())
        .then(() => process.exit(0))
        .catch((error: unknown) => {
          logger.error({ err: error }, 'stop failed');
          process.exit(1);
        });
    };
    process.once('SIGTERM', shutdown);
    process.once('SIGINT', shutdown);
  };
  main().catch((error: unknown) => {
    logger.error({ err: error }, `${name} failed`);
    process.stderr.write(`${name} failed: ${String(error)}\n`);
    process.exit(1);
  });
}
