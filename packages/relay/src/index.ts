export { OutboxRelay, type DrainResult, type RelayStats, type RelayHealth } from './outbox-relay';
export type { OutboxRelayOptions, RelayHooks, RelayClientChoice } from './config';
export { createPlatformaticProducer, classifyPlatformaticError, PlatformaticSendError } from './platformatic-producer';
export { pruneOutbox, outboxBacklog, type PruneOutboxOptions, type OutboxBacklog } from './outbox-store';
export { listParked, requeueParked, discardParked, type ParkedRow, type ParkedSelection } from './parked';
export {
  createKafkajsProducer,
  classifyKafkajsError,
  classifyKafkaErrorTypes,
  type ProducerClient,
  type ProducerClientSettings,
  type ProducerSettings,
  type KafkaSettings,
  type TopicBatch,
  type OutgoingMessage,
  type ProduceFailureKind,
} from './kafka-adapter';
export { RELAY_METRICS, relayPrometheusMetrics } from './metrics';

import { OutboxRelay } from './outbox-relay';
import type { OutboxRelayOptions } from './config';

/** Creates an {@link OutboxRelay} (not started): `const relay = createRelay({ ... }); await relay.start();`. */
export function createRelay<DB>(options: OutboxRelayOptions<DB>): OutboxRelay<DB> {
  return new OutboxRelay(options);
}
