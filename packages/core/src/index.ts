export { EffectivelyError, InvalidConfigError, InvalidIdentifierError, MigrationError, ServiceStartError, ErrorCodes, type ErrorCode } from './errors';
export { assertIdentifier, MAX_IDENTIFIER_BYTES } from './identifiers';
export { createLogger, silentLogger, kafkajsLogCreator, type Logger, type KafkajsLogEntry } from './logger';
export { createDatabase, type Database, type DatabaseOptions } from './db';
export { migrate, type MigrateOptions, type MigrateOutcome } from './migrate';
export { createOutboxWriter, type OutboxWriter, type OutboxMessage, type EnqueueResult } from './outbox';
export { NoopMetrics, PrometheusMetrics, type Metrics, type MetricLabels, type MetricDefinition } from './metrics';
