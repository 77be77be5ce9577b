import { type SpendEvent, dayOf } from './events';

/** How the simulated ad servers behave. */
export interface GeneratorOptions {
  /** Unique events. */
  events: number;
  campaigns: number;
  /** Share of events sent more than once (2–3 copies), 0..1. */
  duplicateRate: number;
  /** Share of duplicated events whose copies arrive later (after a delay), not right away. */
  delayedShare?: number;
  /** Days the timestamps spread over (UTC, from `startDay`). */
  days?: number;
  startDay?: string;
  random: () => number;
}

/** One message as sent: the event and whether it is a retry. */
export interface Sent {
  event: SpendEvent;
  copy: boolean;
  /** Retries sent after a delay go out in a later produce round. */
  round: number;
}

/** Exact figures from the unique events: what every correct consumer must arrive at. */
export interface GroundTruth {
  uniqueEvents: number;
  messages: number;
  duplicates: number;
  /** campaign → day → total micros. */
  totals: Record<string, Record<string, number>>;
  budgets: Record<string, number>;
  /** `budget:<campaign>:<day>` ids of the alerts that must be delivered exactly once. */
  alerts: string[];
}

/** Everything a run needs: the stream in send order, and the truth. */
export interface Scenario {
  stream: Sent[];
  truth: GroundTruth;
}

const MS_PER_DAY = 86_400_000;

/**
 * Plays ad servers that retry: each event gets a random campaign, an integer amount in micros
 * and a timestamp; a `duplicateRate` share is sent 2–3 times, part of the copies right away and
 * part in a later round (as a retry after a time-out would). Budgets are chosen so that roughly
 * half the campaign-days cross theirs.
 */
export function generateScenario(options: GeneratorOptions): Scenario {
  const { random } = options;
  const days = options.days ?? 2;
  const start = Date.parse(`${options.startDay ?? '2026-01-05'}T00:00:00Z`);
  const rounds = 4;
  const events: SpendEvent[] = [];
  for (let i = 0; i < options.events; i++) {
    // A skewed campaign mix: low-numbered campaigns spend more.
    const c = Math.floor(random() ** 1.5 * options.campaigns);
    const at = start + Math.floor((i / Math.max(1, options.events)) * days * MS_PER_DAY);
    events.push({
      event_id: `imp-${i.toString(36)}-${Math.floor(random() * 1e9).toString(36)}`,
      campaign_id: `cmp-${String(c).padStart(3, '0')}`,
      spend_amount: 1_000 + Math.floor(random() * 2_000_000),
      timestamp: new Date(at).toISOString(),
    });
  }
  const perRound: Sent[][] = Array.from({ length: rounds }, () => []);
  let duplicates = 0;
  events.forEach((event, i) => {
    const round = Math.min(rounds - 1, Math.floor((i / events.length) * rounds));
    perRound[round]?.push({ event, copy: false, round });
    if (random() < options.duplicateRate) {
      const copies = 1 + Math.floor(random() * 2);
      for (let c = 0; c < copies; c++) {
        duplicates++;
        const delayed = random() < (options.delayedShare ?? 0.5);
        const later = delayed ? Math.min(rounds - 1, round + 1 + Math.floor(random() * 2)) : round;
        perRound[later]?.push({ event, copy: true, round: later });
      }
    }
  });
  const totals: Record<string, Record<string, number>> = {};
  for (const e of events) {
    const byDay = (totals[e.campaign_id] ??= {});
    const day = dayOf(e.timestamp);
    byDay[day] = (byDay[day] ?? 0) + e.spend_amount;
  }
  const budgets: Record<string, number> = {};
  const alerts: string[] = [];
  for (const [campaign, byDay] of Object.entries(totals)) {
    const values = Object.values(byDay);
    const mean = values.reduce((a, b) => a + b, 0) / Math.max(1, days);
    budgets[campaign] = Math.max(1, Math.floor(mean * (0.75 + random() * 0.5)));
    for (const [day, total] of Object.entries(byDay)) if (total > (budgets[campaign] ?? 0)) alerts.push(`budget:${campaign}:${day}`);
  }
  alerts.sort();
  const stream = perRound.flat();
  return { stream, truth: { uniqueEvents: events.length, messages: stream.length, duplicates, totals, budgets, alerts } };
}

/** The Kafka message for an event: keyed by campaign, `event-id` header = the event's id. */
export function toMessage(event: SpendEvent): { key: string; value: string; headers: Record<string, string> } {
  return { key: event.campaign_id, value: JSON.stringify(event), headers: { 'event-id': event.event_id } };
}
