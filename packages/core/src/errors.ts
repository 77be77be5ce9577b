/**
 * Every error this library throws on purpose is an {@link EffectivelyError}: it carries a
 * stable `code` (for alerting and `switch`), a `canRetry` flag, and a message that says what
 * to do about it.
 */
export const ErrorCodes = {
  INVALID_CONFIG: 'INVALID_CONFIG',
  INVALID_IDENTIFIER: 'INVALID_IDENTIFIER',
  MIGRATION_FAILED: 'MIGRATION_FAILED',
  SERVICE_START_FAILED: 'SERVICE_START_FAILED',
  HANDLER_TIMEOUT: 'HANDLER_TIMEOUT',
  FENCED: 'FENCED',
  ATTEMPT_ENDED: 'ATTEMPT_ENDED',
  STOPPED: 'STOPPED',
  SCHEMA_NOT_MIGRATED: 'SCHEMA_NOT_MIGRATED',
  SCHEMA_NEWER_THAN_LIBRARY: 'SCHEMA_NEWER_THAN_LIBRARY',
  TOPIC_NOT_FOUND: 'TOPIC_NOT_FOUND',
  OPTIONAL_PEER_UNAVAILABLE: 'OPTIONAL_PEER_UNAVAILABLE',
  TRANSACTION_ABORTED: 'TRANSACTION_ABORTED',
  TRANSACTION_CONTROL_REFUSED: 'TRANSACTION_CONTROL_REFUSED',
} as const;

/** One of the stable error codes in {@link ErrorCodes}. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Base class of every error the library throws deliberately. */
export class EffectivelyError extends Error {
  /** Stable, machine-readable code. */
  readonly code: ErrorCode;
  /** Whether retrying the same operation may succeed. */
  readonly canRetry: boolean;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; canRetry?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.canRetry = options.canRetry ?? false;
  }
}

/** A configuration value is missing, out of range or inconsistent with another. */
export class InvalidConfigError extends EffectivelyError {
  constructor(message: string) {
    super(ErrorCodes.INVALID_CONFIG, message);
  }
}

/** A name that would become part of SQL (schema, table, group) is not a safe identifier. */
export class InvalidIdentifierError extends EffectivelyError {
  constructor(message: string) {
    super(ErrorCodes.INVALID_IDENTIFIER, message);
  }
}

/** Applying the schema migrations failed; the database was left at the last good migration. */
export class MigrationError extends EffectivelyError {
  constructor(message: string, cause?: unknown) {
    super(ErrorCodes.MIGRATION_FAILED, message, { cause });
  }
}

/** A backing service (Kafka broker, Postgres server) could not be started or reached. */
export class ServiceStartError extends EffectivelyError {
  /** Which piece is missing or broken, e.g. `java`, `maven`, `port`, `timeout`. */
  readonly missing: string;

  constructor(missing: string, message: string, cause?: unknown) {
    super(ErrorCodes.SERVICE_START_FAILED, message, { cause });
    this.missing = missing;
  }
}

/**
 * The schema has not been migrated, or was migrated by an older version: `missing` lists the
 * migrations it lacks. Run `effectively migrate --schema <schema>` (or `migrate(db, { schema })`).
 */
export class SchemaNotMigratedError extends EffectivelyError {
  /** The schema checked. */
  readonly schema: string;
  /** Migrations this version needs that the schema has not had, in order. */
  readonly missing: readonly string[];

  constructor(schema: string, missing: readonly string[], applied: number) {
    const state = applied === 0 ? 'has never been migrated' : `was migrated by an older version (missing ${missing.join(', ')})`;
    super(ErrorCodes.SCHEMA_NOT_MIGRATED, `Schema "${schema}" ${state}. Run \`effectively migrate --schema ${schema}\` (or migrate(db, { schema: '${schema}' })) and start again.`);
    this.schema = schema;
    this.missing = missing;
  }
}

/**
 * The schema has migrations this version of the library does not know: a newer version migrated
 * it. Its tables may mean something this version would misread (a key, a column's meaning), so
 * nothing uses it: run the version that migrated it (or newer). `unknown` lists those migrations.
 */
export class SchemaNewerThanLibraryError extends EffectivelyError {
  /** The schema checked. */
  readonly schema: string;
  /** Migrations recorded in the schema that this version does not have. */
  readonly unknown: readonly string[];

  constructor(schema: string, unknown: readonly string[]) {
    super(
      ErrorCodes.SCHEMA_NEWER_THAN_LIBRARY,
      `Schema "${schema}" was migrated by a newer version of effectively (unknown migrations: ${unknown.join(', ')}). ` +
        'This version cannot guarantee exactly-once on tables it does not know; upgrade @effectively/* to the version that migrated it (or newer). Do not migrate it down by hand.',
    );
    this.schema = schema;
    this.unknown = unknown;
  }
}

/**
 * Topics a consumer subscribes to do not exist on the cluster. The library never creates
 * topics (their partition count and retention are the operator's decision): create them
 * (`kafka-topics.sh --create --topic <name> --partitions <n>`, or kafkajs `admin.createTopics`)
 * and start again.
 */
export class TopicNotFoundError extends EffectivelyError {
  /** The subscribed topics the cluster does not have. */
  readonly topics: readonly string[];

  constructor(topics: readonly string[]) {
    const list = topics.map((t) => `"${t}"`).join(', ');
    super(
      ErrorCodes.TOPIC_NOT_FOUND,
      `Topic${topics.length === 1 ? '' : 's'} ${list} ${topics.length === 1 ? 'does' : 'do'} not exist on the cluster. Create ${topics.length === 1 ? 'it' : 'them'} (kafka-topics.sh --create --topic <name> --partitions <n>, or kafkajs admin.createTopics) and start again; the consumer never creates topics.`,
      { canRetry: true },
    );
    this.topics = topics;
  }
}

/**
 * A transaction could not commit because Postgres had already aborted it: a statement in it
 * failed, and user code (a handler, a batch handler, a hook, an HTTP handler) caught that error
 * and returned normally. Postgres then ignores every later statement (SQLSTATE 25P02) and turns
 * COMMIT into ROLLBACK: nothing the transaction wrote was kept, so it is reported as a failure
 * instead of a success (the consumer retries the event and, after its last attempt,
 * dead-letters it; the HTTP layer answers with an error and keeps no response).
 */
export class TransactionAbortedError extends EffectivelyError {
  constructor(options: { cause?: unknown } = {}) {
    super(
      ErrorCodes.TRANSACTION_ABORTED,
      'The transaction was rolled back, not committed: a statement in it failed and the error was caught by user code (a handler or hook) that then returned normally; Postgres ignores everything after a failed statement, so nothing of this transaction was kept. Let database errors propagate out of the handler, avoid the error in SQL (e.g. INSERT … ON CONFLICT DO NOTHING), or run the statement that may fail inside a savepoint (SAVEPOINT s … ROLLBACK TO SAVEPOINT s) before catching its error.',
      { ...(options.cause === undefined ? {} : { cause: options.cause }), canRetry: false },
    );
  }
}

/** SQLSTATE 25P02 (in_failed_sql_transaction): a statement sent after an earlier one of the same transaction failed. */
export function isInFailedTransaction(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '25P02';
}

/**
 * User code (a consumer's handler or batch handler, an HTTP handler in transactional mode) sent a
 * statement that would end the transaction the library opened for it (COMMIT, END, ROLLBACK
 * without TO, ABORT, PREPARE TRANSACTION), alone or among several statements in one query: the
 * library commits that transaction itself, together with its own records (the event's claim, the
 * stored response). The statement is not sent; the attempt or request fails like any handler error.
 */
export class TransactionControlRefusedError extends EffectivelyError {
  constructor(statement: string) {
    super(
      ErrorCodes.TRANSACTION_CONTROL_REFUSED,
      `Refused "${statement}" from a handler: the library commits the handler's transaction itself, together with its own records (the event's claim, the stored response), so a handler must not end it. To undo part of its own work, a handler can use SAVEPOINT s … ROLLBACK TO SAVEPOINT s.`,
      { canRetry: false },
    );
  }
}
