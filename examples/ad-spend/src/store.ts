import { sql, type Kysely, type Transaction } from 'kysely';
import { assertIdentifier, type Outbox } from '@effectively/core';
import { budgetAlertId, dayOf, type BudgetExceeded, type SpendEvent } from './events';
import type { GroundTruth } from './generator';

type Db = Kysely<unknown> | Transaction<unknown>;

/**
 * The example's own tables, next to effectively's in the same schema:
 * - `campaign_budgets`: daily budget per campaign (micros);
 * - `campaign_daily_spend`: the aggregate, per campaign and UTC day;
 * - `budget_alerts`: one row per alert *delivery* the notifier handled (no unique key on
 *   purpose, so a double delivery would show as two rows);
 * - `ground_truth`: what the generator knows the figures must be.
 */
export async function createAdSpendTables(db: Kysely<unknown>, schemaName: string): Promise<void> {
  const schema = assertIdentifier(schemaName, 'schema');
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(schema, 'campaign_budgets')} (campaign_id text PRIMARY KEY, daily_budget bigint NOT NULL CHECK (daily_budget > 0))`.execute(db);
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(schema, 'campaign_daily_spend')} (
      campaign_id text NOT NULL, day date NOT NULL, total bigint NOT NULL, events integer NOT NULL,
      PRIMARY KEY (campaign_id, day))`.execute(db);
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(schema, 'budget_alerts')} (
      id bigserial PRIMARY KEY, event_id text NOT NULL, campaign_id text NOT NULL, day date NOT NULL,
      total bigint NOT NULL, daily_budget bigint NOT NULL, received_at timestamptz NOT NULL DEFAULT now())`.execute(db);
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(schema, 'ground_truth')} (id integer PRIMARY KEY, truth jsonb NOT NULL)`.execute(db);
}

/** Per campaign and day: the sum and count of a set of events (aggregated in JS before the upsert). */
export interface DaySum {
  campaign_id: string;
  day: string;
  amount: number;
  events: number;
}

export function sumByCampaignDay(events: readonly SpendEvent[]): DaySum[] {
  const sums = new Map<string, DaySum>();
  for (const e of events) {
    const day = dayOf(e.timestamp);
    const key = `${e.campaign_id}\u0000${day}`;
    const s = sums.get(key);
    if (s === undefined) sums.set(key, { campaign_id: e.campaign_id, day, amount: e.spend_amount, events: 1 });
    else {
      s.amount += e.spend_amount;
      s.events += 1;
    }
  }
  return [...sums.values()].sort((a, b) => (a.campaign_id < b.campaign_id ? -1 : a.campaign_id > b.campaign_id ? 1 : a.day < b.day ? -1 : 1));
}

/**
 * Adds `events` to the per-campaign per-day totals in ONE statement (multi-row upsert) and, in
 * the same statement, returns the campaign-days whose total went from at most the budget to
 * above it (old total = new total − what this statement added). Rows are sorted so concurrent
 * transactions lock them in the same order.
 */
export async function addSpend(trx: Db, schemaName: string, events: readonly SpendEvent[]): Promise<BudgetExceeded[]> {
  const schema = assertIdentifier(schemaName, 'schema');
  const sums = sumByCampaignDay(events);
  if (sums.length === 0) return [];
  const spend = sql.id(schema, 'campaign_daily_spend');
  const rows = sums.map((s) => sql`(${s.campaign_id}::text, ${s.day}::date, ${s.amount}::bigint, ${s.events}::integer)`);
  const { rows: crossed } = await sql<{ campaign_id: string; day: string; total: string; daily_budget: string }>`
    WITH input (campaign_id, day, amount, events) AS (VALUES ${sql.join(rows)}),
    upserted AS (
      INSERT INTO ${spend} AS s (campaign_id, day, total, events)
      SELECT campaign_id, day, amount, events FROM input
      ON CONFLICT (campaign_id, day) DO UPDATE SET total = s.total + excluded.total, events = s.events + excluded.events
      RETURNING s.campaign_id, s.day, s.total)
    SELECT u.campaign_id, to_char(u.day, 'YYYY-MM-DD') AS day, u.total::text AS total, b.daily_budget::text AS daily_budget
    FROM upserted u
    JOIN input i ON i.campaign_id = u.campaign_id AND i.day = u.day
    JOIN ${sql.id(schema, 'campaign_budgets')} b ON b.campaign_id = u.campaign_id
    WHERE u.total - i.amount <= b.daily_budget AND u.total > b.daily_budget`.execute(trx);
  return crossed.map((r) => ({ type: 'campaign.budget_exceeded', campaign_id: r.campaign_id, day: r.day, total: Number(r.total), daily_budget: Number(r.daily_budget) }));
}

/** Adds the events and enqueues one `campaign.budget_exceeded` per crossing, all in `trx`. */
export async function applySpend(trx: Db, schema: string, events: readonly SpendEvent[], outbox: Outbox, alertsTopic: string): Promise<number> {
  const crossed = await addSpend(trx, schema, events);
  if (crossed.length > 0) {
    await outbox.publish(
      trx,
      crossed.map((alert) => ({ eventId: budgetAlertId(alert.campaign_id, alert.day), topic: alertsTopic, key: alert.campaign_id, value: { ...alert } })),
    );
  }
  return crossed.length;
}

export async function saveGroundTruth(db: Db, schema: string, truth: GroundTruth): Promise<void> {
  const rows = Object.entries(truth.budgets).map(([c, b]) => sql`(${c}, ${b}::bigint)`);
  if (rows.length > 0) {
    await sql`INSERT INTO ${sql.id(schema, 'campaign_budgets')} (campaign_id, daily_budget) VALUES ${sql.join(rows)}
              ON CONFLICT (campaign_id) DO UPDATE SET daily_budget = excluded.daily_budget`.execute(db);
  }
  await sql`INSERT INTO ${sql.id(schema, 'ground_truth')} (id, truth) VALUES (1, ${JSON.stringify(truth)}::jsonb)
            ON CONFLICT (id) DO UPDATE SET truth = excluded.truth`.execute(db);
}

export async function loadGroundTruth(db: Db, schema: string): Promise<GroundTruth | undefined> {
  const { rows } = await sql<{ truth: GroundTruth }>`SELECT truth FROM ${sql.id(schema, 'ground_truth')} WHERE id = 1`.execute(db);
  return rows[0]?.truth;
}

/** Stored totals as campaign → day → micros. */
export async function storedTotals(db: Db, schema: string): Promise<Record<string, Record<string, number>>> {
  const { rows } = await sql<{ campaign_id: string; day: string; total: string }>`
    SELECT campaign_id, to_char(day, 'YYYY-MM-DD') AS day, total::text AS total FROM ${sql.id(schema, 'campaign_daily_spend')}`.execute(db);
  const out: Record<string, Record<string, number>> = {};
  for (const r of rows) (out[r.campaign_id] ??= {})[r.day] = Number(r.total);
  return out;
}

/** Alert deliveries the notifier recorded: event id → how many times. */
export async function deliveredAlerts(db: Db, schema: string): Promise<Map<string, number>> {
  const { rows } = await sql<{ event_id: string; n: string }>`SELECT event_id, count(*)::text AS n FROM ${sql.id(schema, 'budget_alerts')} GROUP BY event_id`.execute(db);
  return new Map(rows.map((r) => [r.event_id, Number(r.n)]));
}

/** Records one alert delivery (the notifier's effect). */
export async function recordAlert(trx: Db, schema: string, eventId: string, alert: BudgetExceeded): Promise<void> {
  await sql`INSERT INTO ${sql.id(schema, 'budget_alerts')} (event_id, campaign_id, day, total, daily_budget)
            VALUES (${eventId}, ${alert.campaign_id}, ${alert.day}::date, ${alert.total}::bigint, ${alert.daily_budget}::bigint)`.execute(trx);
}

/** Event ids the consumer group has claimed. */
export async function processedCount(db: Db, schema: string, group: string): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${sql.id(schema, 'processed_events')} WHERE consumer_group = ${group}`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

export async function pendingOutbox(db: Db, schema: string): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${sql.id(schema, 'outbox')} WHERE status = 'pending'`.execute(db);
  return Number(rows[0]?.n ?? 0);
}
