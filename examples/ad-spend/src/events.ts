/** A spend event as ad servers send it. Amounts are integer micros (1 USD = 1,000,000), never floats. */
export interface SpendEvent {
  event_id: string;
  campaign_id: string;
  /** Integer micros. */
  spend_amount: number;
  /** ISO-8601 UTC timestamp of the impression/click. */
  timestamp: string;
}

/** The alert the aggregator emits through the outbox when a campaign's day total crosses its budget. */
export interface BudgetExceeded {
  type: 'campaign.budget_exceeded';
  campaign_id: string;
  /** `YYYY-MM-DD` (UTC). */
  day: string;
  daily_budget: number;
  total: number;
}

/** The UTC day (`YYYY-MM-DD`) an event counts towards. */
export function dayOf(timestamp: string): string {
  const day = timestamp.slice(0, 10);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) throw new Error(`timestamp ${JSON.stringify(timestamp)} is not ISO-8601`);
  return day;
}

/** The deterministic outbox event id: one alert per campaign and day, however often the crossing is computed. */
export function budgetAlertId(campaignId: string, day: string): string {
  return `budget:${campaignId}:${day}`;
}

/** Checks a decoded message is a {@link SpendEvent}; throws (→ dead letter) otherwise. */
export function parseSpendEvent(value: unknown): SpendEvent {
  const v = value as Partial<SpendEvent> | null;
  if (
    v === null ||
    typeof v !== 'object' ||
    typeof v.event_id !== 'string' ||
    typeof v.campaign_id !== 'string' ||
    typeof v.spend_amount !== 'number' ||
    !Number.isSafeInteger(v.spend_amount) ||
    v.spend_amount < 0 ||
    typeof v.timestamp !== 'string'
  ) {
    throw new Error(`not a spend event: ${JSON.stringify(value)}`);
  }
  dayOf(v.timestamp);
  return v as SpendEvent;
}
