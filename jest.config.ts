import Module from 'node:module';
import path from 'node:path';
import type { Config } from 'jest';

// The packages resolve to their compiled dist/ (npm run build). Tests run against the sources:
// test files through moduleNameMapper below, and the global setup (loaded by Node's own require
// in this process, not through jest's resolver) through this hook, so `npx jest` works on a
// fresh clone and never runs a stale build.
const SOURCES: Record<string, string> = {
  '@effectively/migrations': path.join(__dirname, 'migrations/src/index.ts'),
  ...Object.fromEntries(['core', 'kafka', 'relay', 'http', 'cli', 'testkit'].map((p) => [`@effectively/${p}`, path.join(__dirname, 'packages', p, 'src/index.ts')])),
};
type Resolve = (request: string, ...rest: unknown[]) => string;
const resolver = Module as unknown as { _resolveFilename: Resolve };
const resolveFilename = resolver._resolveFilename;
resolver._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]): string {
  return resolveFilename.call(this, SOURCES[request] ?? request, ...rest);
};

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
    // An ES module: loaded by Node's require (Node.js ≥ 22.12), which jest's module system cannot do.
    '^@platformatic/kafka$': '<rootDir>/packages/testkit/src/jest/platformatic-kafka.ts',
  },
  globalSetup: '<rootDir>/packages/testkit/src/jest/global-setup.ts',
  globalTeardown: '<rootDir>/packages/testkit/src/jest/global-teardown.ts',
  maxWorkers: 2,
  testTimeout: 120_000,
  verbose: true,
};

export default config;
