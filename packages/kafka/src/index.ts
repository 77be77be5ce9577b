export { IdempotentConsumer, type ConsumerStats, type StopInfo } from './idempotent-consumer';
export type { IdempotentConsumerOptions, ConsumedEvent, HandlerContext, EventHandler, BatchHandler, FailurePolicy } from './config';
export type { EventIdSource, InvalidIdReason } from './event-id';
export type { ConsumerHooks, HookContext } from './hooks';
export type { ConsumerClient, FetchedBatch, RawMessage, Assignment, KafkaClientSettings } from './kafka-adapter';
export { HandlerTimeoutError, FencedError, AttemptEndedError, isTransientDatabaseError } from './errors';
export { pruneProcessedEvents } from './store';
export { CONSUMER_METRICS, consumerPrometheusMetrics } from './metrics';
