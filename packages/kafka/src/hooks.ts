/** Where in the pipeline a hook fires, with what it is about. */
export interface HookContext {
  topic: string;
  partition: number;
  /** Offsets of the chunk's first and last messages. */
  firstOffset: string;
  lastOffset: string;
  /** Event ids claimed (newly) in this transaction. */
  claimed: readonly string[];
}

/**
 * Lifecycle hooks, called at the points where a crash is most dangerous. They exist for
 * observation and for fault injection in tests (e.g. `process.kill(process.pid, 'SIGKILL')`
 * in `afterDbCommit`). A hook that throws is treated like a failure at that point.
 */
export interface ConsumerHooks {
  /** Inside the open transaction, after the claim and the handlers, before COMMIT. */
  beforeDbCommit?(ctx: HookContext): void | Promise<void>;
  /** After COMMIT, before the Kafka offset commit. */
  afterDbCommit?(ctx: HookContext): void | Promise<void>;
  /** After the Kafka offset commit. */
  afterOffsetCommit?(ctx: HookContext & { committedOffset: string }): void | Promise<void>;
}
