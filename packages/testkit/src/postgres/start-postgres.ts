import { InvalidConfigError } from '@effectively/core';
import { dockerAvailable } from '../docker';
import { once, type RunningPostgres } from '../service';
import { startEmbeddedPostgres } from './embedded-postgres';

/** Options for {@link startPostgres}. */
export interface StartPostgresOptions {
  /** Environment to read `DATABASE_URL` from; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Whether a Docker engine answers; default probes for one. Injectable for tests. */
  dockerAvailable?: () => Promise<boolean>;
  /** Image for testcontainers; default `postgres:15-alpine`. */
  image?: string;
  /** Port for embedded Postgres; default a free port. */
  port?: number;
  /** Extra `postgres -c` settings for embedded Postgres, e.g. `{ max_connections: 200 }`. */
  settings?: Record<string, string | number>;
}


function validateUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') throw new Error('protocol');
    return url;
  } catch {
    throw new InvalidConfigError(`DATABASE_URL ${JSON.stringify(url)} is not a postgres:// URL; write e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/test.`);
  }
}

async function startContainer(image: string): Promise<RunningPostgres> {
  const started = Date.now();
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer(image).start();
  return { url: container.getConnectionUri(), source: 'testcontainers', startupMs: Date.now() - started, stop: once(async () => void (await container.stop())) };
}

/**
 * Gives a Postgres server to talk to, choosing in this order:
 * 1. `DATABASE_URL` from the environment (nothing is started or stopped);
 * 2. testcontainers, when a Docker engine answers;
 * 3. embedded Postgres from npm ({@link startEmbeddedPostgres}).
 */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<RunningPostgres> {
  const env = options.env ?? process.env;
  const fromEnv = env['DATABASE_URL'];
  if (fromEnv !== undefined && fromEnv !== '') {
    return { url: validateUrl(fromEnv), source: 'env', startupMs: 0, stop: async () => undefined };
  }
  const docker = await (options.dockerAvailable ?? (() => dockerAvailable(env)))();
  if (docker) return startContainer(options.image ?? 'postgres:15-alpine');
  return startEmbeddedPostgres(options);
}
