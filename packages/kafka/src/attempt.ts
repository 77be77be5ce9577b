import type { Kysely, KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryExecutor, QueryResult, RootOperationNode, Transaction, UnknownRow } from 'kysely';
import type { Outbox } from '@effectively/core';
import { AttemptEndedError, TransactionControlRefusedError } from './errors';

/**
 * One run of user code (a handler, a batch handler) inside a chunk transaction. User code gets
 * {@link trx} and {@link outbox} from here instead of the chunk's own: once the attempt is
 * {@link end}ed — it returned, threw, timed out, or the consumer gave the transaction up — every
 * statement and outbox write it still issues is refused, so work of an abandoned attempt can
 * never run later in autocommit or in another transaction on the same connection.
 *
 * Statements issued before the end run in the attempt's transaction (they are queued ahead of
 * whatever the consumer does next on that connection); if the transaction is given up while
 * user code may still have one in flight, the consumer ends the connection instead of
 * returning it to the pool (see {@link ChunkConnection}).
 */
export class Attempt {
  private ended: string | undefined;
  /** The transaction as user code sees it: refuses statements once the attempt is over. */
  readonly trx: Transaction<unknown>;
  /** The outbox as user code sees it: refuses writes once the attempt is over. */
  readonly outbox: Outbox;

  constructor(trx: Transaction<unknown>, outbox: Outbox) {
    const check = (): void => this.assertLive();
    this.trx = guardTransaction(trx.withPlugin(new AttemptGuardPlugin(check)), check);
    const guarded: Outbox = {
      schema: outbox.schema,
      publish<DB>(t: Transaction<DB> | Kysely<DB>, messages: Parameters<Outbox['publish']>[1]) {
        try {
          check();
        } catch (error) {
          return Promise.reject(error);
        }
        return outbox.publish(t, messages);
      },
    };
    this.outbox = Object.freeze(guarded);
  }

  /** True until {@link end}. */
  get live(): boolean {
    return this.ended === undefined;
  }

  /** Ends the attempt (idempotent; the first reason is kept). */
  end(why: string): void {
    this.ended ??= why;
  }

  private assertLive(): void {
    if (this.ended !== undefined) throw new AttemptEndedError(this.ended);
  }
}

/** Refuses every query (builders and `sql` templates alike) once `check` throws. */
class AttemptGuardPlugin implements KyselyPlugin {
  constructor(private readonly check: () => void) {}

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    this.check();
    return args.node;
  }

  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return Promise.resolve(args.result);
  }
}

const REWRAP = new Set<PropertyKey>(['withPlugin', 'withSchema', 'withTables']);

/**
 * Closes the paths around plugins: precompiled queries (`executeQuery`, also through
 * `getExecutor()`) are checked too, and `withoutPlugins()` keeps the guard.
 */
function guardTransaction(trx: Transaction<unknown>, check: () => void): Transaction<unknown> {
  return new Proxy(trx, {
    get(target, property) {
      if (property === 'executeQuery') {
        return (...args: Parameters<Transaction<unknown>['executeQuery']>) => {
          check();
          refuseTransactionControl(args[0]);
          return target.executeQuery(...args);
        };
      }
      if (property === 'withoutPlugins') {
        return () => guardTransaction(target.withoutPlugins().withPlugin(new AttemptGuardPlugin(check)), check);
      }
      if (property === 'getExecutor') {
        return () => guardExecutor(target.getExecutor(), check);
      }
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (REWRAP.has(property)) {
        return (...args: unknown[]) => guardTransaction((value as (...a: unknown[]) => Transaction<unknown>).apply(target, args), check);
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

const REWRAP_EXECUTOR = new Set<PropertyKey>(['withPlugin', 'withPlugins', 'withPluginAtFront', 'withoutPlugins', 'withConnectionProvider']);

/** The executor behind a guarded transaction: runs (and streams) nothing once `check` throws. */
function guardExecutor(executor: QueryExecutor, check: () => void): QueryExecutor {
  return new Proxy(executor, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const method = value as (...a: unknown[]) => unknown;
      if (property === 'executeQuery' || property === 'stream') {
        return (...args: unknown[]) => {
          check();
          refuseTransactionControl(args[0]);
          return method.apply(target, args);
        };
      }
      if (REWRAP_EXECUTOR.has(property)) return (...args: unknown[]) => guardExecutor(method.apply(target, args) as QueryExecutor, check);
      return method.bind(target);
    },
  });
}

/**
 * A statement that ends the transaction (COMMIT, END, ABORT, ROLLBACK but not ROLLBACK TO, PREPARE
 * TRANSACTION), after leading comments: the handler's writes and the event's claim must commit
 * together, by the consumer.
 */
const ENDS_TRANSACTION = /^(?:\s|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*(commit|end|abort|rollback(?!\s+to\b)|prepare\s+transaction)\b/i;

/** Throws {@link TransactionControlRefusedError} for a compiled query whose SQL would end the transaction. */
function refuseTransactionControl(query: unknown): void {
  const text = typeof query === 'object' && query !== null ? (query as { sql?: unknown }).sql : undefined;
  if (typeof text !== 'string') return;
  const match = ENDS_TRANSACTION.exec(text);
  if (match !== null) throw new TransactionControlRefusedError((match[1] ?? '').toUpperCase());
}
