/**
 * Wraps a Kysely transaction handed to user code so that each statement passes a check before it
 * is sent: the paths around plugins (precompiled queries through `executeQuery`, also via
 * `getExecutor()`, and streams) are covered, and the wrappers `withPlugin`, `withSchema`,
 * `withTables` and `withoutPlugins` return keep the check.
 */
import type { Compilable, CompiledQuery, KyselyPlugin, QueryExecutor, Transaction } from 'kysely';
import { TransactionControlRefusedError } from './errors';
import { transactionEndingStatement } from './statement-control';

/** Called with each compiled query before it is sent; throws to refuse it. */
export type StatementCheck = (query: CompiledQuery | undefined) => void;

/** What {@link guardTransaction} needs beyond the transaction. */
export interface TransactionGuardOptions {
  /** Runs before every precompiled query and stream. */
  check: StatementCheck;
  /** Plugins added back when user code calls `withoutPlugins()` (the guard's own plugin, say). */
  keepPlugins?: readonly KyselyPlugin[];
}

/**
 * Refuses a compiled query whose text would end the transaction it runs in (COMMIT, END, ABORT,
 * ROLLBACK but not ROLLBACK TO, PREPARE TRANSACTION), in any of its statements.
 *
 * @throws TransactionControlRefusedError naming the statement; nothing was sent.
 */
export function refuseTransactionControl(query: CompiledQuery | undefined): void {
  const text: unknown = query?.sql;
  if (typeof text !== 'string') return;
  const statement = transactionEndingStatement(text);
  if (statement !== undefined) throw new TransactionControlRefusedError(statement);
}

const isCompilable = <R>(query: CompiledQuery<R> | Compilable<R>): query is Compilable<R> => typeof (query as Partial<Compilable<R>>).compile === 'function';

const REWRAP = new Set<PropertyKey>(['withPlugin', 'withSchema', 'withTables']);

/** `trx` with every precompiled query and stream passed through `options.check` first. */
export function guardTransaction<DB>(trx: Transaction<DB>, options: TransactionGuardOptions): Transaction<DB> {
  return new Proxy(trx, {
    get(target, property) {
      if (property === 'executeQuery') {
        return <R>(query: CompiledQuery<R> | Compilable<R>) => {
          // A builder or `sql` template passed here is compiled first, so its text is checked too.
          try {
            const compiled = isCompilable(query) ? query.compile() : query;
            options.check(compiled);
            return target.executeQuery(compiled);
          } catch (error) {
            return Promise.reject(error);
          }
        };
      }
      if (property === 'withoutPlugins') {
        return () => {
          let bare = target.withoutPlugins();
          for (const plugin of options.keepPlugins ?? []) bare = bare.withPlugin(plugin);
          return guardTransaction(bare, options);
        };
      }
      if (property === 'getExecutor') {
        return () => guardExecutor(target.getExecutor(), options.check);
      }
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (REWRAP.has(property)) {
        return (...args: unknown[]) => guardTransaction((value as (...a: unknown[]) => Transaction<DB>).apply(target, args), options);
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

const REWRAP_EXECUTOR = new Set<PropertyKey>(['withPlugin', 'withPlugins', 'withPluginAtFront', 'withoutPlugins', 'withConnectionProvider']);

/** The executor behind a guarded transaction: runs (and streams) nothing `check` refuses. */
function guardExecutor(executor: QueryExecutor, check: StatementCheck): QueryExecutor {
  return new Proxy(executor, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const method = value as (...a: unknown[]) => unknown;
      if (property === 'executeQuery') {
        return (...args: unknown[]) => {
          try {
            check(args[0] as CompiledQuery);
          } catch (error) {
            return Promise.reject(error);
          }
          return method.apply(target, args);
        };
      }
      if (property === 'stream') {
        // Checked when the stream is first read, before anything is sent.
        return (...args: unknown[]) =>
          (async function* checkedStream() {
            check(args[0] as CompiledQuery);
            yield* method.apply(target, args) as AsyncIterable<unknown>;
          })();
      }
      if (REWRAP_EXECUTOR.has(property)) return (...args: unknown[]) => guardExecutor(method.apply(target, args) as QueryExecutor, check);
      return method.bind(target);
    },
  });
}
