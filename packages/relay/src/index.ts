export { OutboxRelay, type DrainResult, type RelayStats } from './outbox-relay';
export type { OutboxRelayOptions } from './config';
export { createAdvisoryLeaderLock, type LeaderLock, type AdvisoryLeaderLockOptions } from './leader-lock';
export { pruneOutbox, type PruneOutboxOptions } from './outbox-store';
export {
  createKafkajsProducer,
  classifyKafkajsError,
  type ProducerClient,
  type ProducerClientSettings,
  type ProducerSettings,
  type KafkaSettings,
  type TopicBatch,
  type OutgoingMessage,
  type ProduceFailureKind,
} from './kafka-adapter';
export { RELAY_METRICS, relayPrometheusMetrics } from './metrics';
