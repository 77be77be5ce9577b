import { CompiledQuery, Transaction, type Kysely } from 'kysely';

/**
 * Runs `body` in a transaction on one pooled connection, as Kysely's `db.transaction().execute`
 * does (COMMIT when it returns, ROLLBACK when it throws), except that with `beginInFirst` no
 * BEGIN is sent ahead: `body` is told (`begin: true`) to begin the transaction with its first
 * statement, in that statement's round trip (see `CompiledOnce` with `begin`). The ROLLBACK after
 * a failure is sent whether or not the first statement got as far as beginning (without a
 * transaction, Postgres answers it with a warning).
 */
export async function runInTransaction<R>(db: Kysely<unknown>, beginInFirst: boolean, body: (trx: Transaction<unknown>, begin: boolean) => Promise<R>): Promise<R> {
  if (!beginInFirst) return db.transaction().execute((trx) => body(trx, false));
  return db.connection().execute(async (connection) => {
    let result: R;
    try {
      result = await body(asTransaction(connection), true);
    } catch (error) {
      await connection.executeQuery(CompiledQuery.raw('rollback'));
      throw error;
    }
    await connection.executeQuery(CompiledQuery.raw('commit'));
    return result;
  });
}

const REWRAP = new Set<PropertyKey>(['withPlugin', 'withoutPlugins', 'withSchema', 'withTables']);
/** What Kysely's `Transaction` refuses. */
const REFUSED = new Set<PropertyKey>(['transaction', 'startTransaction', 'connection', 'destroy']);

/**
 * A Kysely instance bound to one connection, inside a transaction this code began, as a
 * `Transaction`: `isTransaction` is true (so e.g. `outbox.publish` writes in it instead of opening
 * its own), `instanceof Transaction` holds, and `transaction()`, `startTransaction()`,
 * `connection()` and `destroy()` throw as on a Kysely `Transaction`.
 */
function asTransaction(db: Kysely<unknown>): Transaction<unknown> {
  return new Proxy(db, {
    get(target, property) {
      if (property === 'isTransaction') return true;
      if (REFUSED.has(property)) {
        return () => {
          throw new Error(`calling the ${String(property)} method for a Transaction is not supported`);
        };
      }
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const method = value as (...args: unknown[]) => unknown;
      if (REWRAP.has(property)) return (...args: unknown[]) => asTransaction(method.apply(target, args) as Kysely<unknown>);
      return method.bind(target);
    },
    getPrototypeOf() {
      return Transaction.prototype;
    },
  }) as unknown as Transaction<unknown>;
}
