import { InvalidConfigError, nodeVersionAtLeast, PLATFORMATIC_KAFKA } from '@effectively/core';

/** Variables through which the jest global setup hands service addresses to test files. */
export const TEST_ENV = {
  brokers: 'EFFECTIVELY_TEST_KAFKA_BROKERS',
  databaseUrl: 'EFFECTIVELY_TEST_DATABASE_URL',
  /** The Kafka client the parametrised guarantee tests run on; see {@link testClient}. */
  client: 'EFFECTIVELY_TEST_CLIENT',
} as const;

/** The Kafka clients the consumer and the relay run on. */
export const TEST_CLIENTS = ['kafkajs', 'platformatic'] as const;

/** One of {@link TEST_CLIENTS}. */
export type TestClient = (typeof TEST_CLIENTS)[number];

/**
 * The Kafka client this test run is for, from `EFFECTIVELY_TEST_CLIENT` (unset: `kafkajs`); the
 * parametrised tests pass it as the consumer's and the relay's `client` option. `npm test` runs
 * them once per client (`platformatic` under Node.js 22, `npm run test:platformatic`).
 */
export function testClient(env: NodeJS.ProcessEnv = process.env): TestClient {
  const value = env[TEST_ENV.client] ?? 'kafkajs';
  if (!(TEST_CLIENTS as readonly string[]).includes(value)) {
    throw new InvalidConfigError(`${TEST_ENV.client} must be one of ${TEST_CLIENTS.join(', ')}, got ${JSON.stringify(value)}.`);
  }
  if (value === 'platformatic' && !nodeVersionAtLeast(PLATFORMATIC_KAFKA.minNode ?? '0.0.0')) {
    throw new InvalidConfigError(`${TEST_ENV.client}=platformatic needs Node.js ≥ ${PLATFORMATIC_KAFKA.minNode} (this is ${process.version}): run npm run test:platformatic, which runs jest under Node 22.`);
  }
  return value as TestClient;
}

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
