import { sql, type Kysely } from 'kysely';
import { migrate } from '@effectively/core';

/** The example's own table, next to effectively's in the same schema. */
export interface PaymentRow {
  id: string;
  account: string;
  amount: number;
  currency: string;
  customer: string;
  created_at: Date;
}

/** Applies effectively's migrations (idempotency_keys, outbox, …) and creates the `payments` table. */
export async function prepareSchema(db: Kysely<unknown>, schema: string): Promise<void> {
  await migrate(db, { schema });
  await db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtext(${'example-payments:' + schema}))`.execute(trx);
    await sql`
      CREATE TABLE IF NOT EXISTS ${sql.id(schema, 'payments')} (
        id uuid PRIMARY KEY,
        account text NOT NULL,
        amount bigint NOT NULL CHECK (amount > 0),
        currency text NOT NULL,
        customer text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      )`.execute(trx);
  });
}
