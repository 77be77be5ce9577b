import { CompiledQuery, Transaction, type Kysely } from 'kysely';
import { Query } from 'pg';
import { TransactionAbortedError } from './errors';

/**
 * Runs `body` in a transaction on one pooled connection, as Kysely's `db.transaction().execute`
 * does (COMMIT when it returns, ROLLBACK when it throws), with two differences:
 *
 * - COMMIT is checked: when Postgres answers it with ROLLBACK (a statement of the transaction
 *   failed and its error was caught, so the transaction was already aborted), it throws
 *   {@link TransactionAbortedError} instead of returning as if everything was kept. Kysely's
 *   own transactions report success there.
 * - With `beginInFirst` no BEGIN is sent ahead: `body` is told (`begin: true`) to begin the
 *   transaction with its first statement, in that statement's round trip. The ROLLBACK after a
 *   failure is sent whether or not the first statement got as far as beginning (without a
 *   transaction, Postgres answers it with a warning).
 *
 * `body` gets the connection as a Kysely `Transaction` (see {@link asTransaction}). Internal to
 * the effectively packages.
 *
 * @throws TransactionAbortedError when COMMIT rolled the transaction back; whatever `body` or
 *   a statement throws otherwise
 */
export async function runInTransaction<R>(db: Kysely<unknown>, beginInFirst: boolean, body: (trx: Transaction<unknown>, begin: boolean) => Promise<R>): Promise<R> {
  const held = await holdConnection(db);
  try {
    let result: R;
    try {
      if (!beginInFirst) await held.begin();
      result = await body(held.trx, beginInFirst);
    } catch (error) {
      await held.rollback();
      throw error;
    }
    await held.commit();
    return result;
  } finally {
    held.release();
  }
}

/**
 * One pooled connection, held until {@link HeldConnection.release} (across calls, unlike
 * `db.connection().execute`, which releases it when its callback returns), with the transaction
 * statements {@link runInTransaction} uses. Internal to the effectively packages.
 */
export interface HeldConnection {
  /** The connection as a Kysely instance. */
  readonly db: Kysely<unknown>;
  /** The connection as a Kysely `Transaction`, for statements inside a transaction this code began (see {@link asTransaction}). */
  readonly trx: Transaction<unknown>;
  begin(): Promise<void>;
  /** COMMIT, checked: throws {@link TransactionAbortedError} when Postgres answered ROLLBACK. */
  commit(): Promise<void>;
  rollback(): Promise<void>;
  /** Hands the connection back to the pool (once; later calls do nothing). */
  release(): void;
}

/** Takes a connection from `db`'s pool and holds it until `release()`. */
export function holdConnection(db: Kysely<unknown>): Promise<HeldConnection> {
  return new Promise((resolve, reject) => {
    let release: () => void = () => undefined;
    const released = new Promise<void>((done) => {
      release = done;
    });
    db.connection()
      .execute(async (connection) => {
        resolve({
          db: connection,
          trx: asTransaction(connection),
          begin: async () => void (await connection.executeQuery(CompiledQuery.raw('begin'))),
          commit: () => commitChecked(connection),
          rollback: async () => void (await connection.executeQuery(CompiledQuery.raw('rollback'))),
          release,
        });
        await released;
      })
      .catch(reject);
  });
}

/** Sends COMMIT; throws {@link TransactionAbortedError} when Postgres answered it with ROLLBACK. */
async function commitChecked(connection: Kysely<unknown>): Promise<void> {
  let tag: string | undefined;
  const query = new Query({ text: 'COMMIT' });
  const text = queryAsText(query, 'COMMIT', (result) => {
    tag = (result as { command?: unknown } | undefined)?.command as string | undefined;
  });
  await connection.executeQuery({ ...CompiledQuery.raw('COMMIT'), sql: text });
  if (tag === 'ROLLBACK') throw new TransactionAbortedError();
}

/**
 * node-postgres' `query` object as a statement's SQL text, for Kysely's `PostgresDialect` (which
 * hands `sql` to `client.query`): node-postgres runs an object with `submit` as is, Kysely awaits
 * it (it is a thenable resolving to node-postgres' result, seen first by `onResult`), and wherever
 * a string is expected (a Kysely `log` function, String methods, `length`) it reads as `text`.
 * Internal to the effectively packages.
 */
export function queryAsText(query: Query, text: string, onResult?: (result: unknown) => void): string {
  const q = query as unknown as { callback?: (error: Error | undefined, result?: unknown) => void };
  let done: Promise<unknown> | undefined;
  const then = (resolve: (value: unknown) => unknown, reject: (error: unknown) => unknown): Promise<unknown> => {
    done ??= new Promise((ok, fail) => {
      q.callback = (error, result) => {
        if (error !== undefined && error !== null) return fail(error);
        onResult?.(result);
        ok(result);
      };
    });
    return done.then(resolve, reject);
  };
  const stringMethods = String.prototype as unknown as Record<PropertyKey, unknown>;
  const proxy = new Proxy(query, {
    get(target, property) {
      if (property === 'then') return then;
      if (property === 'toString' || property === 'valueOf') return () => text;
      if (property === 'length') return text.length;
      if (property in target) return Reflect.get(target, property) as unknown;
      const method = stringMethods[property];
      return typeof method === 'function' ? (method as (...args: unknown[]) => unknown).bind(text) : undefined;
    },
  });
  return proxy as unknown as string;
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
