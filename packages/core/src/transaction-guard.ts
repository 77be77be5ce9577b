/**
 * Wraps a Kysely transaction handed to user code so that no statement it sends can end the
 * transaction (see {@link refuseTransactionControl}), by any path: query builders (a plugin
 * compiles and checks every query that holds raw SQL, such as `modifyEnd(sql`…`)`), `sql`
 * templates, precompiled queries through `executeQuery` (also via `getExecutor()`), and streams.
 * The wrappers `withPlugin`, `withSchema`, `withTables` and `withoutPlugins` return keep the guard.
 */
import { PostgresQueryCompiler, type Compilable, type CompiledQuery, type KyselyPlugin, type OperationNode, type PluginTransformQueryArgs, type PluginTransformResultArgs, type QueryExecutor, type QueryResult, type RootOperationNode, type Transaction, type UnknownRow } from 'kysely';
import { TransactionControlRefusedError } from './errors';
import { transactionEndingStatement } from './statement-control';

/** What {@link guardTransaction} checks beyond transaction control. */
export interface TransactionGuardOptions {
  /** Runs before every statement (builders, templates and precompiled queries alike); throws to refuse it. */
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

/** Whether `node` holds raw SQL anywhere (only raw SQL can spell a transaction-control statement). */
function holdsRawSql(node: unknown): boolean {
  if (typeof node !== 'object' || node === null) return false;
  if (Array.isArray(node)) return node.some(holdsRawSql);
  if ((node as OperationNode).kind === 'RawNode') return true;
  for (const value of Object.values(node)) if (typeof value === 'object' && value !== null && holdsRawSql(value)) return true;
  return false;
}

/** Checks each query before it is compiled for sending: `check`, then its text when it holds raw SQL. */
class GuardPlugin implements KyselyPlugin {
  private compiler: PostgresQueryCompiler | undefined;

  constructor(private readonly check: (() => void) | undefined) {}

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    this.check?.();
    if (holdsRawSql(args.node)) refuseTransactionControl((this.compiler ??= new PostgresQueryCompiler()).compileQuery(args.node, args.queryId));
    return args.node;
  }

  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return Promise.resolve(args.result);
  }
}

const isCompilable = <R>(query: CompiledQuery<R> | Compilable<R>): query is Compilable<R> => typeof (query as Partial<Compilable<R>>).compile === 'function';

const REWRAP = new Set<PropertyKey>(['withPlugin', 'withSchema', 'withTables']);

/**
 * `trx` as user code should see it: every statement passes `options.check` (if any) and is
 * refused with {@link TransactionControlRefusedError} when it would end the transaction.
 */
export function guardTransaction<DB>(trx: Transaction<DB>, options: TransactionGuardOptions = {}): Transaction<DB> {
  const plugin = new GuardPlugin(options.check);
  const checkCompiled = (query: CompiledQuery | undefined): void => {
    options.check?.();
    refuseTransactionControl(query);
  };
  return wrap(trx.withPlugin(plugin), plugin, checkCompiled);
}

function wrap<DB>(trx: Transaction<DB>, plugin: GuardPlugin, checkCompiled: (query: CompiledQuery | undefined) => void): Transaction<DB> {
  return new Proxy(trx, {
    get(target, property) {
      if (property === 'executeQuery') {
        return <R>(query: CompiledQuery<R> | Compilable<R>) => {
          try {
            // A builder passed here is compiled first (through the plugin), so its text is checked too.
            const compiled = isCompilable(query) ? query.compile() : query;
            checkCompiled(compiled);
            return target.executeQuery(compiled);
          } catch (error) {
            return Promise.reject(error);
          }
        };
      }
      if (property === 'withoutPlugins') {
        return () => wrap(target.withoutPlugins().withPlugin(plugin), plugin, checkCompiled);
      }
      if (property === 'getExecutor') {
        return () => guardExecutor(target.getExecutor(), checkCompiled);
      }
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (REWRAP.has(property)) {
        return (...args: unknown[]) => wrap((value as (...a: unknown[]) => Transaction<DB>).apply(target, args), plugin, checkCompiled);
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

const REWRAP_EXECUTOR = new Set<PropertyKey>(['withPlugin', 'withPlugins', 'withPluginAtFront', 'withoutPlugins', 'withConnectionProvider']);

/** The executor behind a guarded transaction: runs (and streams) nothing `check` refuses. */
function guardExecutor(executor: QueryExecutor, check: (query: CompiledQuery | undefined) => void): QueryExecutor {
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
