import { CompiledQuery, type Kysely } from 'kysely';

/** What {@link PgQuery} resolves with: node-postgres' `rows` and `rowCount`. */
export interface PgQueryResult<R> {
  rows: R[];
  /** Rows inserted, updated or deleted; for a `SELECT`, rows returned. */
  rowCount: number;
}

/**
 * node-postgres' `client.query(text, values)`: SQL text with `$1, $2, …` placeholders and their
 * values, run on a Kysely instance or transaction. Values are sent as bind parameters, never
 * spliced into the text. Code written against a `pg` client's `query` runs on it unchanged.
 */
export type PgQuery = <R = Record<string, unknown>>(text: string, values?: readonly unknown[]) => Promise<PgQueryResult<R>>;

/**
 * Runs plain SQL through `db` (typically the transaction a handler was given), for code that is
 * not written with Kysely: `const { rows } = await pgQuery(trx)('SELECT … WHERE id = $1', [id])`.
 * Everything it does commits or rolls back with that transaction.
 */
export function pgQuery<DB>(db: Kysely<DB>): PgQuery {
  return async <R>(text: string, values: readonly unknown[] = []): Promise<PgQueryResult<R>> => {
    const result = await db.executeQuery<R>(CompiledQuery.raw(text, [...values]));
    return { rows: [...result.rows], rowCount: result.numAffectedRows === undefined ? result.rows.length : Number(result.numAffectedRows) };
  };
}
