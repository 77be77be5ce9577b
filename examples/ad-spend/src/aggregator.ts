import { createOutbox, type Logger } from '@effectively/core';
import { IdempotentConsumer, type ConsumerHooks } from '@effectively/kafka';
import type { Kysely } from 'kysely';
import { parseSpendEvent, type SpendEvent } from './events';
import { applySpend } from './store';

export interface AggregatorOptions {
  brokers: string[];
  db: Kysely<unknown>;
  schema: string;
  spendTopic: string;
  alertsTopic: string;
  groupId: string;
  batchSize?: number;
  mode?: 'batch' | 'event';
  sessionTimeoutMs?: number;
  partitionsConsumedConcurrently?: number;
  hooks?: ConsumerHooks;
  /** The Kafka client (default kafkajs); `platformatic` needs Node.js ≥ 22.22 and @platformatic/kafka. */
  client?: 'kafkajs' | 'platformatic';
  /** Called for every message as it is decoded (observation, e.g. benchmarks' start time). */
  onReceived?: () => void;
  logger: Logger;
}

/**
 * The spend aggregator: an idempotent consumer in batch mode. Per chunk, the batch handler
 * aggregates the newly claimed events in JS and does ONE multi-row upsert of per-campaign
 * per-day totals; budget crossings found by that statement go to the outbox in the same
 * transaction. If the batch handler throws, the chunk is retried event by event through the
 * per-event handler (same SQL, one event).
 */
export function createAggregator(options: AggregatorOptions): IdempotentConsumer<SpendEvent> {
  const outbox = createOutbox({ schema: options.schema });
  return new IdempotentConsumer<SpendEvent>({
    brokers: options.brokers,
    ...(options.client === undefined ? {} : { client: options.client }),
    groupId: options.groupId,
    topics: [options.spendTopic],
    db: options.db,
    schema: options.schema,
    mode: options.mode ?? 'batch',
    batchSize: options.batchSize ?? 500,
    decode: (value) => {
      options.onReceived?.();
      return parseSpendEvent(JSON.parse(value.toString('utf8')));
    },
    handler: async (event, { trx }) => {
      await applySpend(trx, options.schema, [event.value], outbox, options.alertsTopic);
    },
    batchHandler: async (events, { trx, logger }) => {
      const alerts = await applySpend(
        trx,
        options.schema,
        events.map((e) => e.value),
        outbox,
        options.alertsTopic,
      );
      if (alerts > 0) logger.info({ alerts }, 'budget crossings enqueued');
    },
    sessionTimeoutMs: options.sessionTimeoutMs ?? 10_000,
    heartbeatIntervalMs: Math.floor((options.sessionTimeoutMs ?? 10_000) / 5),
    ...(options.partitionsConsumedConcurrently === undefined ? {} : { partitionsConsumedConcurrently: options.partitionsConsumedConcurrently }),
    hooks: options.hooks,
    logger: options.logger,
  });
}
