/** The settings every process of the example reads from its environment. */
export interface PipelineEnv {
  brokers: string[];
  databaseUrl: string;
  schema: string;
  spendTopic: string;
  alertsTopic: string;
  aggregatorGroup: string;
  notifierGroup: string;
}

export function required(env: NodeJS.ProcessEnv, name: string): string {
  const value = env[name];
  if (value === undefined || value === '') throw new Error(`${name} is required`);
  return value;
}

export function numFrom(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, got ${JSON.stringify(raw)}`);
  return n;
}

/**
 * KAFKA_BROKERS, DATABASE_URL (required); SCHEMA (default `ad_spend`), SPEND_TOPIC
 * (`ad-spend`), ALERTS_TOPIC (`ad-spend-alerts`), AGGREGATOR_GROUP (`ad-spend-aggregator`),
 * NOTIFIER_GROUP (`ad-spend-notifier`).
 */
export function pipelineEnv(env: NodeJS.ProcessEnv = process.env): PipelineEnv {
  return {
    brokers: required(env, 'KAFKA_BROKERS').split(',').map((b) => b.trim()).filter((b) => b !== ''),
    databaseUrl: required(env, 'DATABASE_URL'),
    schema: env.SCHEMA ?? 'ad_spend',
    spendTopic: env.SPEND_TOPIC ?? 'ad-spend',
    alertsTopic: env.ALERTS_TOPIC ?? 'ad-spend-alerts',
    aggregatorGroup: env.AGGREGATOR_GROUP ?? 'ad-spend-aggregator',
    notifierGroup: env.NOTIFIER_GROUP ?? 'ad-spend-notifier',
  };
}

/** Puts a {@link PipelineEnv} back into variables for a child process. */
export function toEnv(p: PipelineEnv): Record<string, string> {
  return {
    KAFKA_BROKERS: p.brokers.join(','),
    DATABASE_URL: p.databaseUrl,
    SCHEMA: p.schema,
    SPEND_TOPIC: p.spendTopic,
    ALERTS_TOPIC: p.alertsTopic,
    AGGREGATOR_GROUP: p.aggregatorGroup,
    NOTIFIER_GROUP: p.notifierGroup,
  };
}

/** A line a process prints on stdout for its supervisor: `@<kind> <json>`. */
export function report(kind: string, data: Record<string, unknown> = {}): void {
  process.stdout.write(`@${kind} ${JSON.stringify(data)}\n`);
}
