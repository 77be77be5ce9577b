import { sql, type Kysely, type Transaction } from 'kysely';
import type { ConsumedEvent } from '../../src';

/** The test's business effect: per-account totals, updated with an upsert (not idempotent by itself). */
export interface Entry {
  account: string;
  amount: number;
}

export async function createLedger(db: Kysely<unknown>, schema: string): Promise<void> {
  await sql`CREATE TABLE ${sql.id(schema, 'totals')} (account text PRIMARY KEY, total bigint NOT NULL, applied integer NOT NULL)`.execute(db);
}

/** Adds the entry to its account: applying an event twice would double it. */
export async function apply(trx: Transaction<unknown> | Kysely<unknown>, schema: string, entry: Entry): Promise<void> {
  await sql`INSERT INTO ${sql.id(schema, 'totals')} (account, total, applied) VALUES (${entry.account}, ${entry.amount}, 1)
            ON CONFLICT (account) DO UPDATE SET total = ${sql.id(schema, 'totals')}.total + EXCLUDED.total, applied = ${sql.id(schema, 'totals')}.applied + 1`.execute(trx);
}

export function handler(schema: string) {
  return async (event: ConsumedEvent<Entry>, { trx }: { trx: Transaction<unknown> }): Promise<void> => apply(trx, schema, event.value);
}

export async function totals(db: Kysely<unknown>, schema: string): Promise<Record<string, { total: number; applied: number }>> {
  const { rows } = await sql<{ account: string; total: string; applied: number }>`SELECT account, total, applied FROM ${sql.id(schema, 'totals')}`.execute(db);
  return Object.fromEntries(rows.map((r) => [r.account, { total: Number(r.total), applied: r.applied }]));
}

/** The model: totals from unique events only. */
export function model(entries: Array<{ id: string; entry: Entry }>): Record<string, { total: number; applied: number }> {
  const out: Record<string, { total: number; applied: number }> = {};
  const seen = new Set<string>();
  for (const { id, entry } of entries) {
    if (seen.has(id)) continue;
    seen.add(id);
    const t = (out[entry.account] ??= { total: 0, applied: 0 });
    t.total += entry.amount;
    t.applied += 1;
  }
  return out;
}

export function makeEvents(n: number, random: () => number, prefix = 'e'): Array<{ id: string; entry: Entry }> {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, entry: { account: `acct-${Math.floor(random() * 10)}`, amount: 1 + Math.floor(random() * 1000) } }));
}

export function toMessages(events: Array<{ id: string; entry: Entry }>) {
  return events.map((e) => ({ key: e.entry.account, value: JSON.stringify(e.entry), headers: { 'event-id': e.id } }));
}

/** Polls until `check` passes or `timeoutMs` elapses; returns the last value. */
export async function waitFor<R>(read: () => Promise<R>, check: (value: R) => boolean, timeoutMs = 60_000): Promise<R> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!check(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    value = await read();
  }
  return value;
}

export async function count(db: Kysely<unknown>, schema: string, table: string, where = sql`true`): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(schema, table)} WHERE ${where}`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/** Order-independent equality of two totals maps. */
export function sameTotals(a: Record<string, { total: number; applied: number }>, b: Record<string, { total: number; applied: number }>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k]?.total === b[k]?.total && a[k]?.applied === b[k]?.applied);
}
