import { startKafka } from '../kafka/start-kafka';
import { startPostgres } from '../postgres/start-postgres';
import type { RunningKafka, RunningPostgres } from '../service';
import { TEST_ENV } from './env';

/** What the global setup leaves for the global teardown. */
export interface GlobalServices {
  kafka: RunningKafka;
  postgres: RunningPostgres;
}

const KEY = '__effectivelyServices';

/**
 * jest `globalSetup`: starts Kafka and Postgres once per run (both at once), and hands their
 * addresses to the test files through environment variables.
 */
export default async function globalSetup(): Promise<void> {
  const [kafka, postgres] = await Promise.allSettled([startKafka(), startPostgres()]);
  if (kafka.status === 'rejected' || postgres.status === 'rejected') {
    if (kafka.status === 'fulfilled') await kafka.value.stop();
    if (postgres.status === 'fulfilled') await postgres.value.stop();
    throw kafka.status === 'rejected' ? kafka.reason : (postgres as PromiseRejectedResult).reason;
  }
  const services: GlobalServices = { kafka: kafka.value, postgres: postgres.value };
  (globalThis as Record<string, unknown>)[KEY] = services;
  process.env[TEST_ENV.brokers] = services.kafka.brokers.join(',');
  process.env[TEST_ENV.databaseUrl] = services.postgres.url;
  const stopAll = (): void => {
    void Promise.allSettled([services.kafka.stop(), services.postgres.stop()]).then(() => process.exit(130));
  };
  process.once('SIGINT', stopAll);
  process.once('SIGTERM', stopAll);
  process.stderr.write(
    `\n[effectively] kafka ${services.kafka.source}${services.kafka.version ? ' ' + services.kafka.version : ''} at ${services.kafka.brokers.join(',')} (started in ${services.kafka.startupMs} ms); ` +
      `postgres ${services.postgres.source} (started in ${services.postgres.startupMs} ms)\n`,
  );
}

/** Returns what {@link globalSetup} started, for the teardown. */
export function startedServices(): GlobalServices | undefined {
  return (globalThis as Record<string, unknown>)[KEY] as GlobalServices | undefined;
}
