import { createOutbox } from '@effectively/core';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import type { SpendEvent } from '../src/events';
import { addSpend, applySpend, createAdSpendTables, storedTotals, sumByCampaignDay } from '../src/store';

/** The aggregate SQL on its own: one upsert per call, crossings found from old and new totals. */
describe('ad-spend store', () => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, 'ad_spend_store', { max: 2 });
    await createAdSpendTables(ts.db, ts.schema);
    await sql`INSERT INTO ${sql.id(ts.schema, 'campaign_budgets')} VALUES ('a', 1000), ('b', 1000)`.execute(ts.db);
  });
  afterAll(async () => ts?.drop());

  const ev = (id: string, campaign: string, amount: number, day = '2026-01-05'): SpendEvent => ({ event_id: id, campaign_id: campaign, spend_amount: amount, timestamp: `${day}T10:00:00.000Z` });

  it('sums per campaign and day in JS, in a stable order', () => {
    expect(sumByCampaignDay([ev('1', 'b', 5), ev('2', 'a', 1), ev('3', 'a', 2), ev('4', 'a', 4, '2026-01-06')])).toEqual([
      { campaign_id: 'a', day: '2026-01-05', amount: 3, events: 2 },
      { campaign_id: 'a', day: '2026-01-06', amount: 4, events: 1 },
      { campaign_id: 'b', day: '2026-01-05', amount: 5, events: 1 },
    ]);
  });

  it('reports a crossing once: at the statement that takes the total above the budget', async () => {
    expect(await addSpend(ts.db, ts.schema, [ev('1', 'a', 600), ev('2', 'b', 100)])).toEqual([]);
    const crossed = await addSpend(ts.db, ts.schema, [ev('3', 'a', 300), ev('4', 'a', 200), ev('5', 'b', 900)]);
    expect(crossed).toEqual([{ type: 'campaign.budget_exceeded', campaign_id: 'a', day: '2026-01-05', total: 1100, daily_budget: 1000 }]);
    expect(await addSpend(ts.db, ts.schema, [ev('6', 'a', 1), ev('7', 'b', 1)])).toEqual([
      { type: 'campaign.budget_exceeded', campaign_id: 'b', day: '2026-01-05', total: 1001, daily_budget: 1000 },
    ]);
    expect(await addSpend(ts.db, ts.schema, [ev('8', 'a', 1), ev('9', 'b', 1)])).toEqual([]);
    expect(await storedTotals(ts.db, ts.schema)).toEqual({ a: { '2026-01-05': 1102 }, b: { '2026-01-05': 1002 } });
  });

  it('enqueues the alert with the deterministic id budget:<campaign>:<day>, once', async () => {
    const outbox = createOutbox({ schema: ts.schema });
    await applySpend(ts.db, ts.schema, [ev('10', 'a', 5_000, '2026-01-07')], outbox, 'alerts');
    await applySpend(ts.db, ts.schema, [ev('11', 'a', 5_000, '2026-01-07')], outbox, 'alerts');
    const { rows } = await sql<{ event_id: string }>`SELECT event_id FROM ${sql.id(ts.schema, 'outbox')}`.execute(ts.db);
    expect(rows.map((r) => r.event_id)).toEqual(['budget:a:2026-01-07']);
  });
});
