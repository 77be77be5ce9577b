/** Where a service came from, in the order {@link startKafka}/{@link startPostgres} try them. */
export type ServiceSource = 'env' | 'testcontainers' | 'local';

/** A running Kafka cluster a test or demo can use. */
export interface RunningKafka {
  /** `host:port` bootstrap addresses. */
  readonly brokers: string[];
  readonly source: ServiceSource;
  /** Broker version when this kit started it, else undefined. */
  readonly version?: string;
  /** Milliseconds from start request to the broker answering metadata (0 for `env`). */
  readonly startupMs: number;
  /** Stops what this kit started (nothing for `env`). Idempotent. */
  stop(): Promise<void>;
}

/** A running Postgres server a test or demo can use. */
export interface RunningPostgres {
  /** A `postgres://` URL to a database the caller may create schemas in. */
  readonly url: string;
  readonly source: ServiceSource;
  readonly startupMs: number;
  /** Stops what this kit started (nothing for `env`). Idempotent. */
  stop(): Promise<void>;
}

/** Runs `fn` once, remembering its promise. */
export function once(fn: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => (done ??= fn());
}
