import { sql, type Kysely } from 'kysely';
import type { Logger, Metrics } from '@effectively/core';
import type { ConsumerClient } from './kafka-adapter';

/** What {@link startRetentionProbe} needs. */
export interface RetentionProbeSettings {
  db: Kysely<unknown>;
  schema: string;
  groupId: string;
  topics: readonly string[];
  client: ConsumerClient;
  metrics: Metrics;
  logger: Logger;
  /** How often the oldest dedup record's age is read; one index probe each. */
  intervalMs: number;
}

/**
 * Reports what the "dedup retention shorter than the topic's" alert compares: each subscribed
 * topic's `retention.ms` once at start (`consumer_topic_retention_seconds`), and every
 * `intervalMs` the age of the oldest record in `processed_events` and `processed_event_generations`
 * (`dedup_oldest_record_age_seconds`; it drops each time records are pruned or a generation is forgotten). Failures are
 * logged at debug and retried at the next tick: this is observation, never on the critical path.
 */
export function startRetentionProbe(s: RetentionProbeSettings): { stop(): void } {
  const labels = { group: s.groupId };
  const table = sql.id(s.schema, 'processed_events');
  const generations = sql.id(s.schema, 'processed_event_generations');
  let stopped = false;
  const topicRetention = s.client.topicRetentionMs?.bind(s.client);
  if (topicRetention !== undefined) {
    topicRetention([...s.topics])
      .then((retention) => {
        for (const [topic, ms] of retention) s.metrics.set('consumer_topic_retention_seconds', ms / 1000, { ...labels, topic });
      })
      .catch((error: unknown) => s.logger.debug({ err: error }, 'could not read the topics’ retention.ms'));
  }
  const probe = async (): Promise<void> => {
    try {
      const { rows } = await sql<{ age: number | null }>`SELECT extract(epoch FROM now() - least((SELECT min(processed_at) FROM ${table}), (SELECT min(processed_at) FROM ${generations})))::float8 AS age`.execute(s.db);
      if (!stopped) s.metrics.set('dedup_oldest_record_age_seconds', Math.max(0, rows[0]?.age ?? 0), labels);
    } catch (error) {
      s.logger.debug({ err: error }, 'could not read the oldest dedup record’s age');
    }
  };
  void probe();
  const timer = setInterval(() => void probe(), s.intervalMs);
  timer.unref();
  return {
    stop(): void {
      stopped = true;
      clearInterval(timer);
    },
  };
}
