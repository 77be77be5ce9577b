import type { Logger } from '@effectively/core';
import { IdempotentConsumer } from '@effectively/kafka';
import type { Kysely } from 'kysely';
import type { BudgetExceeded } from './events';
import { recordAlert } from './store';

export interface NotifierOptions {
  brokers: string[];
  db: Kysely<unknown>;
  schema: string;
  alertsTopic: string;
  groupId: string;
  sessionTimeoutMs?: number;
  logger: Logger;
}

/**
 * The notifier: reads `campaign.budget_exceeded` from the alerts topic and records each alert
 * (stands in for e-mail/Slack). The relay publishes at least once; the idempotent consumer
 * deduplicates by the `event-id` header (`budget:<campaign>:<day>`), so each alert is recorded once.
 */
export function createNotifier(options: NotifierOptions): IdempotentConsumer<BudgetExceeded> {
  return new IdempotentConsumer<BudgetExceeded>({
    brokers: options.brokers,
    groupId: options.groupId,
    topics: [options.alertsTopic],
    db: options.db,
    schema: options.schema,
    mode: 'batch',
    batchSize: 100,
    handler: async (event, { trx, logger }) => {
      await recordAlert(trx, options.schema, event.id, event.value);
      logger.info({ campaign: event.value.campaign_id, day: event.value.day }, 'budget alert delivered');
    },
    sessionTimeoutMs: options.sessionTimeoutMs ?? 10_000,
    heartbeatIntervalMs: Math.floor((options.sessionTimeoutMs ?? 10_000) / 5),
    logger: options.logger,
  });
}
