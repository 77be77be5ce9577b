import { InvalidConfigError } from '@effectively/core';

/** Variables through which the jest global setup hands service addresses to test files. */
export const TEST_ENV = {
  brokers: 'EFFECTIVELY_TEST_KAFKA_BROKERS',
  databaseUrl: 'EFFECTIVELY_TEST_DATABASE_URL',
} as const;

/** The services the global setup started, as seen from a test file. */
export interface TestServices {
  brokers: string[];
  databaseUrl: string;
}

/** Reads the addresses the global setup published; fails with a hint when it did not run. */
export function testServices(env: NodeJS.ProcessEnv = process.env): TestServices {
  const brokers = env[TEST_ENV.brokers];
  const databaseUrl = env[TEST_ENV.databaseUrl];
  if (brokers === undefined || databaseUrl === undefined) {
    throw new InvalidConfigError('No test services: run tests through the repository jest config (npm test), whose globalSetup starts Kafka and Postgres.');
  }
  return { brokers: brokers.split(','), databaseUrl };
}
