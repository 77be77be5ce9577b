import type { Kysely, Transaction } from 'kysely';

/**
 * effectively's own statements are raw SQL on its own tables (`sql` templates over identifiers
 * checked by `assertIdentifier`), so it needs none of the caller's table types. Every public
 * function takes the caller's `Kysely<DB>` / `Transaction<DB>` as it is, and sees it through
 * these two functions: the one place where `DB` is set aside (Kysely's types are invariant in
 * `DB`, so `Kysely<Mine>` is not a `Kysely<unknown>`) and given back to the caller's code.
 */
export function untyped<DB>(db: Transaction<DB>): Transaction<unknown>;
export function untyped<DB>(db: Kysely<DB>): Kysely<unknown>;
export function untyped<DB>(db: Kysely<DB>): Kysely<unknown> {
  return db as unknown as Kysely<unknown>;
}

/** The caller's transaction type for a transaction effectively opened on the caller's `Kysely<DB>`; see {@link untyped}. */
export function retyped<DB>(trx: Transaction<unknown>): Transaction<DB> {
  return trx as unknown as Transaction<DB>;
}
