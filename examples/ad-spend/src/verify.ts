import type { Kysely } from 'kysely';
import type { GroundTruth } from './generator';
import { deliveredAlerts, processedCount, storedTotals } from './store';

/** One campaign's figures: expected (from unique events) vs stored, summed over days. */
export interface CampaignRow {
  campaign: string;
  expected: number;
  stored: number;
  /** Days whose stored total differs from the expected one. */
  wrongDays: number;
}

/** The outcome of comparing the database with the ground truth. */
export interface Verdict {
  campaigns: CampaignRow[];
  processed: number;
  alertsExpected: number;
  alertsDelivered: number;
  /** Alert ids delivered more than once, or not expected at all, or missing. */
  alertsDoubled: string[];
  alertsUnexpected: string[];
  alertsMissing: string[];
  ok: boolean;
}

export async function verify(db: Kysely<unknown>, schema: string, truth: GroundTruth, aggregatorGroup: string): Promise<Verdict> {
  const stored = await storedTotals(db, schema);
  const names = [...new Set([...Object.keys(truth.totals), ...Object.keys(stored)])].sort();
  const campaigns = names.map((campaign) => {
    const exp = truth.totals[campaign] ?? {};
    const got = stored[campaign] ?? {};
    const days = new Set([...Object.keys(exp), ...Object.keys(got)]);
    let wrongDays = 0;
    for (const d of days) if ((exp[d] ?? 0) !== (got[d] ?? 0)) wrongDays++;
    const sum = (o: Record<string, number>): number => Object.values(o).reduce((a, b) => a + b, 0);
    return { campaign, expected: sum(exp), stored: sum(got), wrongDays };
  });
  const delivered = await deliveredAlerts(db, schema);
  const expected = new Set(truth.alerts);
  const alertsDoubled = [...delivered].filter(([, n]) => n > 1).map(([id]) => id);
  const alertsUnexpected = [...delivered.keys()].filter((id) => !expected.has(id));
  const alertsMissing = truth.alerts.filter((id) => !delivered.has(id));
  const processed = await processedCount(db, schema, aggregatorGroup);
  const alertsDelivered = [...delivered.values()].reduce((a, b) => a + b, 0);
  const ok =
    campaigns.every((c) => c.wrongDays === 0) &&
    processed === truth.uniqueEvents &&
    alertsDoubled.length === 0 &&
    alertsUnexpected.length === 0 &&
    alertsMissing.length === 0;
  return { campaigns, processed, alertsExpected: truth.alerts.length, alertsDelivered, alertsDoubled, alertsUnexpected, alertsMissing, ok };
}

/** Polls `verify` until it passes or `timeoutMs` elapses; returns the last verdict. */
export async function waitForVerdict(db: Kysely<unknown>, schema: string, truth: GroundTruth, group: string, timeoutMs: number, onPoll?: (v: Verdict) => void): Promise<Verdict> {
  const deadline = Date.now() + timeoutMs;
  let v = await verify(db, schema, truth, group);
  while (!v.ok && Date.now() < deadline) {
    onPoll?.(v);
    await new Promise((r) => setTimeout(r, 500));
    v = await verify(db, schema, truth, group);
  }
  return v;
}
