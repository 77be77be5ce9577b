/**
 * Wraps a Kysely transaction handed to user code so that no statement it sends can end the
 * transaction (see {@link refuseTransactionControl}), by any path: the check sits on the
 * connection itself, so query builders, user plugins, `sql` templates, `executeQuery`, the
 * executor, `provideConnection`, streams and `schema` builders all meet it when their SQL is
 * sent. `startTransaction()` (which would begin and commit on the same connection) is refused.
 */
import { PostgresDialect, Transaction, type Compilable, type CompiledQuery, type ConnectionProvider, type DatabaseConnection, type Driver, type KyselyPlugin, type PluginTransformQueryArgs, type PluginTransformResultArgs, type QueryExecutor, type QueryResult, type RootOperationNode, type UnknownRow } from 'kysely';
import { TransactionControlRefusedError } from './errors';
import { transactionEndingStatement } from './statement-control';

/** What {@link guardTransaction} checks beyond transaction control. */
export interface TransactionGuardOptions {
  /**
   * Runs when user code issues a statement (builders, templates and precompiled queries alike),
   * before it is queued; throws to refuse it (e.g. once the user code's attempt is over).
   */
  check?: () => void;
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

/**
 * The query as it will be sent, its text read once: a `sql` that is not a string (node-postgres
 * would take an object for a query config) or that reads differently the next time (a getter)
 * cannot be checked, so it is refused.
 */
function checkedCopy(query: CompiledQuery): CompiledQuery {
  const text: unknown = query.sql;
  if (typeof text !== 'string') throw new TransactionControlRefusedError('a query whose sql is not a string');
  const copy: CompiledQuery = { ...query, sql: text, parameters: [...query.parameters] };
  refuseTransactionControl(copy);
  return copy;
}

/** A connection whose statements are checked by {@link refuseTransactionControl} as they are sent. */
function guardConnection(connection: DatabaseConnection): DatabaseConnection {
  return {
    executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
      let copy: CompiledQuery;
      try {
        copy = checkedCopy(query);
      } catch (error) {
        return Promise.reject(error);
      }
      return connection.executeQuery<R>(copy);
    },
    streamQuery<R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
      return (async function* checkedStream() {
        yield* connection.streamQuery<R>(checkedCopy(query), chunkSize);
      })();
    },
  };
}

const refused = (): Promise<never> => Promise.reject(new TransactionControlRefusedError('startTransaction()'));

/** The driver behind a guarded transaction: it never hands out a connection (`startTransaction()`, `connection()`). */
const REFUSING_DRIVER: Driver = {
  init: () => Promise.resolve(),
  acquireConnection: refused,
  beginTransaction: refused,
  commitTransaction: refused,
  rollbackTransaction: refused,
  releaseConnection: () => Promise.resolve(),
  destroy: () => Promise.resolve(),
};

/** The dialect a guarded transaction reports (for `introspection`); it is never asked for a connection. */
const GUARD_DIALECT = new PostgresDialect({ pool: refused });

/** Runs `check` for every query user code builds, before it is compiled. */
class CheckPlugin implements KyselyPlugin {
  constructor(private readonly check: () => void) {}

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    this.check();
    return args.node;
  }

  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return Promise.resolve(args.result);
  }
}

/**
 * `trx` as user code should see it: a `Transaction` on the same connection (same plugins) whose
 * statements are refused with {@link TransactionControlRefusedError} when they would end the
 * transaction, and, with `options.check`, pass that check when issued.
 */
export function guardTransaction<DB>(trx: Transaction<DB>, options: TransactionGuardOptions = {}): Transaction<DB> {
  const inner = trx.getExecutor();
  const provider: ConnectionProvider = { provideConnection: (consumer) => inner.provideConnection((connection) => consumer(guardConnection(connection))) };
  const guarded = new Transaction<DB>({ config: { dialect: GUARD_DIALECT }, dialect: GUARD_DIALECT, driver: REFUSING_DRIVER, executor: inner.withConnectionProvider(provider) });
  const check = options.check;
  if (check === undefined) return guarded;
  const plugin = new CheckPlugin(check);
  return wrap(guarded.withPlugin(plugin), plugin, check);
}

const REWRAP = new Set<PropertyKey>(['withPlugin', 'withSchema', 'withTables']);

/** Runs `check` on the paths around plugins (precompiled queries, the executor), and keeps the plugin through `withoutPlugins()`. */
function wrap<DB>(trx: Transaction<DB>, plugin: CheckPlugin, check: () => void): Transaction<DB> {
  return new Proxy(trx, {
    get(target, property) {
      if (property === 'executeQuery') {
        return <R>(query: CompiledQuery<R> | Compilable<R>) => {
          try {
            check();
            return target.executeQuery(query);
          } catch (error) {
            return Promise.reject(error);
          }
        };
      }
      if (property === 'withoutPlugins') {
        return () => wrap(target.withoutPlugins().withPlugin(plugin), plugin, check);
      }
      if (property === 'getExecutor') {
        return () => guardExecutor(target.getExecutor(), check);
      }
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (REWRAP.has(property)) {
        return (...args: unknown[]) => wrap((value as (...a: unknown[]) => Transaction<DB>).apply(target, args), plugin, check);
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

const REWRAP_EXECUTOR = new Set<PropertyKey>(['withPlugin', 'withPlugins', 'withPluginAtFront', 'withoutPlugins', 'withConnectionProvider']);

/** The executor behind a checked transaction: runs, streams and provides nothing once `check` throws. */
function guardExecutor(executor: QueryExecutor, check: () => void): QueryExecutor {
  return new Proxy(executor, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const method = value as (...a: unknown[]) => unknown;
      if (property === 'executeQuery' || property === 'provideConnection') {
        return (...args: unknown[]) => {
          try {
            check();
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
            check();
            yield* method.apply(target, args) as AsyncIterable<unknown>;
          })();
      }
      if (REWRAP_EXECUTOR.has(property)) return (...args: unknown[]) => guardExecutor(method.apply(target, args) as QueryExecutor, check);
      return method.bind(target);
    },
  });
}
