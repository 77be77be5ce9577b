export { EffectivelyError, InvalidConfigError, InvalidIdentifierError, MigrationError, ServiceStartError, ErrorCodes, type ErrorCode } from './errors';
export { assertIdentifier, MAX_IDENTIFIER_BYTES } from './identifiers';
export { createLogger, silentLogger, kafkajsLogCreator, type Logger, type KafkajsLogEntry } from './logger';
export { createDatabase, type Database, type DatabaseOptions } from './db';
export { migrate, type MigrateOptions, type MigrateOutcome } from './migrate';
export { createOutbox, createOutboxBuffer, EVENT_ID_HEADER, OUTBOX_CHANNEL, MAX_KEY_BYTES, MAX_EVENT_ID_BYTES, type Outbox, type OutboxBuffer, type OutboxMessage, type OutboxOptions, type PublishResult, type JsonValue } from './outbox';
export { runWithTraceContext, currentTraceContext, isTraceparent, type TraceContext, type TraceContextProvider } from './trace-context';
export { uuidv7 } from './uuid';
export { NoopMetrics, PrometheusMetrics, type Metrics, type MetricLabels, type MetricDefinition } from './metrics';
