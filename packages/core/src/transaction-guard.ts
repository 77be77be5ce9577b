/**
 * Wraps a Kysely transaction handed to user code so that no statement it sends can end the
 * transaction (see {@link refuseTransactionControl}), by any path: query builders (a plugin
 * compiles and checks every query whose raw SQL holds a semicolon, such as
 * `modifyEnd(sql`; COMMIT`)`), `sql` templates, precompiled queries through `executeQuery` (also via `getExecutor()`), and streams.
 * The wrappers `withPlugin`, `withSchema`, `withTables` and `withoutPlugins` return keep the guard.
 */
import { PostgresQueryCompiler, type Compilable, type CompiledQuery, type DatabaseConnection, type KyselyPlugin, type OperationNode, type PluginTransformQueryArgs, type PluginTransformResultArgs, type QueryExecutor, type QueryResult, type RawNode, type RootOperationNode, type Transaction, type UnknownRow } from 'kysely';
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

/** Node kinds that carry user values (never SQL text): not searched. */
const VALUE_KINDS = new Set(['ValueNode', 'PrimitiveValueListNode']);

const isNode = (value: unknown): value is OperationNode => typeof value === 'object' && value !== null && typeof (value as { kind?: unknown }).kind === 'string';

/**
 * Whether raw SQL in `node` holds a semicolon. SQL a query builder writes itself never does
 * (identifiers are quoted, values bound or quoted), so only such a query can carry a second
 * statement; a query that is raw SQL at its root (a `sql` template) is checked where it is
 * executed. User values are not searched.
 */
function rawSqlWithSemicolon(node: OperationNode): boolean {
  if (VALUE_KINDS.has(node.kind)) return false;
  if (node.kind === 'RawNode' && (node as RawNode).sqlFragments.some((f) => f.includes(';'))) return true;
  for (const value of Object.values(node)) {
    if (Array.isArray(value)) {
      for (const item of value) if (isNode(item) && rawSqlWithSemicolon(item)) return true;
    } else if (isNode(value) && rawSqlWithSemicolon(value)) return true;
  }
  return false;
}

/** Checks each query before it is compiled for sending: `check`, then its text when raw SQL in it could add a statement. */
class GuardPlugin implements KyselyPlugin {
  private compiler: PostgresQueryCompiler | undefined;

  constructor(private readonly check: (() => void) | undefined) {}

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    this.check?.();
    if (rawSqlWithSemicolon(args.node)) refuseTransactionControl((this.compiler ??= new PostgresQueryCompiler()).compileQuery(args.node, args.queryId));
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
      if (property === 'provideConnection') {
        // The connection handed to the consumer checks its statements too.
        return (consumer: (connection: DatabaseConnection) => Promise<unknown>) => target.provideConnection((connection) => consumer(guardConnection(connection, check)));
      }
      if (REWRAP_EXECUTOR.has(property)) return (...args: unknown[]) => guardExecutor(method.apply(target, args) as QueryExecutor, check);
      return method.bind(target);
    },
  });
}

/** A connection whose statements pass `check` before they are sent. */
function guardConnection(connection: DatabaseConnection, check: (query: CompiledQuery | undefined) => void): DatabaseConnection {
  return {
    executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
      try {
        check(query);
      } catch (error) {
        return Promise.reject(error);
      }
      return connection.executeQuery<R>(query);
    },
    streamQuery<R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
      return (async function* checkedStream() {
        check(query);
        yield* connection.streamQuery<R>(query, chunkSize);
      })();
    },
  };
}
