import type { Config } from 'jest';

// ts-jest transpiles each file on its own (no type-check here: `npm run typecheck` does that).
const tsJest: [string, Record<string, unknown>] = ['ts-jest', { isolatedModules: true, diagnostics: false }];

/**
 * One Kafka broker and one Postgres for the whole run (global setup); each test file makes
 * its own schema and topics, so files run in parallel without cross-talk.
 */
const config: Config = {
  testEnvironment: 'node',
  roots: ['<rootDir>/packages', '<rootDir>/migrations', '<rootDir>/examples', '<rootDir>/ops'],
  testMatch: ['**/test/**/*.test.ts'],
  transform: { '^.+\\.ts$': tsJest },
  // Tests run against the sources; the published packages resolve to dist/ (npm run build).
  moduleNameMapper: {
    '^@effectively/migrations$': '<rootDir>/migrations/src/index.ts',
    '^@effectively/(core|kafka|relay|http|cli|testkit)$': '<rootDir>/packages/$1/src/index.ts',
    '^@effectively/testkit/jest/(.*)$': '<rootDir>/packages/testkit/src/jest/$1.ts',
  },
  globalSetup: '<rootDir>/packages/testkit/src/jest/global-setup.ts',
  globalTeardown: '<rootDir>/packages/testkit/src/jest/global-teardown.ts',
  maxWorkers: 2,
  testTimeout: 120_000,
  verbose: true,
};

export default config;
