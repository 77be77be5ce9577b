import type { Config } from 'jest';
import base from './jest.config';

/**
 * The test files parametrised by Kafka client: each runs on the client `testClient()` names
 * (`EFFECTIVELY_TEST_CLIENT`). `npm test` runs the whole suite on kafkajs (Node.js 20) and then
 * these files again on @platformatic/kafka under Node.js 22 (`npm run test:platformatic`). A
 * test file that passes its `client` option from `testClient()` belongs in this list.
 */
export const PARAMETRISED_TEST_FILES: readonly string[] = [
  'packages/cli/test/relay-worker.test.ts',
  'packages/core/test/optional-peer.test.ts',
  'packages/kafka/test/abandoned-attempts.test.ts',
  'packages/kafka/test/attempts.test.ts',
  'packages/kafka/test/bad-input.test.ts',
  'packages/kafka/test/client-switch.test.ts',
  'packages/kafka/test/concurrency.test.ts',
  'packages/kafka/test/crash-points.test.ts',
  'packages/kafka/test/database-faults.test.ts',
  'packages/kafka/test/dead-letter-text.test.ts',
  'packages/kafka/test/duplicates.test.ts',
  'packages/kafka/test/fencing.test.ts',
  'packages/kafka/test/frozen-member.test.ts',
  'packages/kafka/test/halt.test.ts',
  'packages/kafka/test/handler-context.test.ts',
  'packages/kafka/test/heartbeats.test.ts',
  'packages/kafka/test/id-namespace.test.ts',
  'packages/kafka/test/metrics-at-zero.test.ts',
  'packages/kafka/test/missing-topic.test.ts',
  'packages/kafka/test/neighbours.test.ts',
  'packages/kafka/test/offsets.test.ts',
  'packages/kafka/test/ops-metrics.test.ts',
  'packages/kafka/test/outbox-trace.test.ts',
  'packages/kafka/test/per-event.test.ts',
  'packages/kafka/test/platformatic-records.test.ts',
  'packages/kafka/test/rebalance.test.ts',
  'packages/kafka/test/redrive.test.ts',
  'packages/kafka/test/schema-check.test.ts',
  'packages/kafka/test/startup-logs.test.ts',
  'packages/kafka/test/superseded-takeover.test.ts',
  'packages/kafka/test/swallowed-error.test.ts',
  'packages/kafka/test/trace-context-option.test.ts',
  'packages/kafka/test/trace-outcomes.test.ts',
  'packages/relay/test/classify.test.ts',
  'packages/relay/test/commit-order.test.ts',
  'packages/relay/test/crash.test.ts',
  'packages/relay/test/pipeline.test.ts',
  'packages/relay/test/poison.test.ts',
  'packages/relay/test/publish.test.ts',
  'packages/relay/test/send-errors.test.ts',
];

const config: Config = {
  ...base,
  testMatch: PARAMETRISED_TEST_FILES.map((file) => `<rootDir>/${file}`),
};

export default config;
