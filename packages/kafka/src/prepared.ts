import { createHash } from 'node:crypto';
import { CompiledQuery, type Kysely, type QueryResult, type RawBuilder, type Transaction } from 'kysely';
import { Query, type Connection } from 'pg';
import { queryAsText } from '@effectively/core';

type Db = Kysely<unknown> | Transaction<unknown>;

/** Stands for the value of argument `index` while a statement is compiled once. */
interface Slot {
  readonly [SLOT]: number;
}
const SLOT = Symbol('effectively.slot');

function slotIndex(value: unknown): number {
  return typeof value === 'object' && value !== null && SLOT in value ? (value as Slot)[SLOT] : -1;
}

/**
 * A statement compiled once and then executed with new values: Kysely builds and compiles the
 * SQL the first time only (per variant, by the caller's key), later executions just fill in the
 * parameters. With `named`, node-postgres runs it as a named prepared statement: parsed and
 * planned by Postgres once per connection (then, when Postgres finds the generic plan no worse,
 * not planned again) instead of at every execution.
 *
 * The name is `effectively_` + a hash of the exact SQL text, so statements of consumers with
 * another schema (other text) never share a name. node-postgres keeps the names it prepared per
 * connection and prepares again on a new one (a statement dies with its connection; a Parse
 * that fails is not remembered).
 */
export class CompiledOnce<A extends unknown[]> {
  private readonly compiled = new Map<string, { sql: string; name: string; query: CompiledQuery['query']; template: unknown[]; slots: number[] }>();

  constructor(private readonly named: boolean) {}

  /**
   * Executes the statement `build(...args)` would make, compiling it (calling `build`) the first time for `key` only.
   * `key` must tell apart every call whose statement text differs (`build` may branch only on
   * what `key` says, and must pass each argument into the SQL untransformed, as a value).
   */
  async execute<R>(db: Db, key: string, args: A, build: (...args: A) => RawBuilder<unknown>, options: FoldOptions = {}): Promise<QueryResult<R>> {
    let c = this.compiled.get(key);
    if (c === undefined) {
      const slots = args.map((_, i) => ({ [SLOT]: i }) as Slot) as unknown as A;
      const compiled = build(...slots).compile(db);
      const indexes = compiled.parameters.map(slotIndex);
      if (compiled.sql.includes('[object Object]')) throw new Error('CompiledOnce: an argument was spliced into the SQL text instead of passed as a parameter');
      const name = `effectively_${createHash('sha256').update(compiled.sql).digest('hex').slice(0, 40)}`;
      c = { sql: compiled.sql, name, query: compiled.query, template: [...compiled.parameters], slots: indexes };
      this.compiled.set(key, c);
    }
    const parameters = c.template.map((p, i) => {
      const slot = c.slots[i] as number;
      return slot < 0 ? p : args[slot];
    });
    const fold = options.begin === true && this.named && (await beginFoldingWorks(db));
    if (options.commitFirst !== undefined && !fold) throw new Error('CompiledOnce: commitFirst needs begin, a named statement and begin folding (see foldsBegin)');
    if (options.begin === true && !fold) await db.executeQuery(CompiledQuery.raw('begin'));
    const sql = !this.named ? c.sql : fold ? beginThen(c.sql, c.name, parameters, options.commitFirst) : namedText(c.sql, c.name);
    return db.executeQuery<R>({ query: c.query, queryId: nextQueryId(), sql, parameters });
  }
}

/** How {@link CompiledOnce.execute} sends a statement that begins a transaction. */
export interface FoldOptions {
  /** The statement begins the transaction: BEGIN goes in its round trip when folding works (see {@link foldsBegin}), else just before it. */
  begin?: boolean;
  /**
   * With `begin`, when folding works only: COMMIT of the transaction open on the connection goes
   * ahead of BEGIN in the same round trip; its command tag (`COMMIT`, or `ROLLBACK` when that
   * transaction had been aborted) is written to `tag` once Postgres answered it. When COMMIT
   * fails, `tag` stays undefined and nothing after it ran; when the statement fails after a
   * COMMIT, `tag` is set: that transaction committed, the new one is open (failed).
   */
  commitFirst?: { tag?: string };
}

/** Whether BEGIN (and COMMIT, see {@link FoldOptions}) can travel with a named statement on this process's node-postgres (probed once, on `db`'s connection, outside a transaction). */
export function foldsBegin(db: Db): Promise<boolean> {
  return beginFoldingWorks(db);
}

let queries = 0;
/**
 * A query id as Kysely 0.28's `createQueryId` makes one (Kysely 0.28 reads it, 0.27 has none and
 * ignores it); that function is not exported by Kysely 0.27, which the packages support.
 */
function nextQueryId(): CompiledQuery['queryId'] {
  queries = (queries + 1) % Number.MAX_SAFE_INTEGER;
  return { queryId: `effectively-${queries.toString(36)}` };
}

let folding: Promise<boolean> | undefined;

/**
 * Whether {@link beginThen} really begins a transaction with the node-postgres this process
 * loaded: it relies on `Query` internals (below) that pg does not promise, and a statement it
 * sent without its BEGIN would commit on its own. Checked once per process, on the connection
 * about to be used (idle, outside a transaction): the probe folds BEGIN into `SELECT 1`, then
 * `SAVEPOINT`, which Postgres refuses outside a transaction block, then `ROLLBACK`. When it fails
 * in any way, BEGIN is sent on its own (one round trip more per event, nothing else changes).
 */
async function beginFoldingWorks(db: Db): Promise<boolean> {
  folding ??= (async () => {
    const internals = Query.prototype as unknown as Partial<Record<keyof QueryInternals, unknown>>;
    if (!(['prepare', 'hasBeenParsed', 'handleCommandComplete', 'handleError'] as const).every((m) => typeof internals[m] === 'function')) return false;
    let works = false;
    try {
      const probe = await db.executeQuery<{ one: number }>({ query: CompiledQuery.raw('').query, queryId: nextQueryId(), sql: beginThen('SELECT 1 AS one', 'effectively_begin_fold_probe', []), parameters: [] });
      await db.executeQuery(CompiledQuery.raw('SAVEPOINT effectively_begin_fold_probe'));
      works = probe.rows[0]?.one === 1;
    } catch {
      works = false;
    } finally {
      await db.executeQuery(CompiledQuery.raw('ROLLBACK')).catch(() => undefined);
    }
    return works;
  })();
  return folding;
}

/** What {@link beginThen} uses of node-postgres' `Query` besides its typed interface (stable across pg 8). */
interface QueryInternals {
  name?: string;
  prepare(connection: Connection): void;
  hasBeenParsed(connection: Connection): boolean;
  handleCommandComplete(message: unknown, connection: Connection): void;
  handleError(error: Error, connection: Connection): void;
}

/**
 * The named prepared statement `name` (SQL `text`) with `values`, preceded by `BEGIN` in the same
 * round trip: node-postgres' query object for it, which Kysely's `PostgresDialect` hands to
 * `client.query` as it does the text (node-postgres runs an object with `submit` as is; Kysely
 * awaits it, so it is also a thenable). BEGIN goes through the extended protocol (Parse, Bind,
 * Execute of the unnamed statement) ahead of the statement's own messages and before their one
 * Sync, so Postgres runs both and answers once; the BEGIN's completion is not reported (the
 * result is the statement's). If the statement fails, the transaction is open (failed): the
 * caller rolls back, as after any failed statement. Reads as the SQL text wherever a string is
 * expected (a Kysely `log` function).
 */
function beginThen(text: string, name: string, values: readonly unknown[], commit?: { tag?: string }): string {
  const query = new Query({ text, name, values: [...values] });
  const q = query as unknown as QueryInternals;
  const proto = Query.prototype as unknown as QueryInternals;
  const ahead = commit === undefined ? ['BEGIN'] : ['COMMIT', 'BEGIN'];
  let answered = 0;
  let parsedHere = false;
  q.prepare = function (this: QueryInternals, connection: Connection): void {
    parsedHere = !proto.hasBeenParsed.call(this, connection);
    for (const statement of ahead) {
      connection.parse({ text: statement, name: '', types: [] }, true);
      connection.bind({ statement: '', portal: '', values: [] }, true);
      connection.execute({ portal: '' }, true);
    }
    proto.prepare.call(this, connection);
  };
  q.handleCommandComplete = function (this: QueryInternals, message: unknown, connection: Connection): void {
    if (answered < ahead.length) {
      const tag = (message as { text?: string }).text;
      if (ahead[answered] === 'COMMIT' && commit !== undefined && tag !== undefined) commit.tag = tag;
      answered++;
      return;
    }
    proto.handleCommandComplete.call(this, message, connection);
  };
  q.handleError = function (this: QueryInternals, error: Error, connection: Connection): void {
    // node-postgres marks the name parsed at the first ParseComplete (the BEGIN's): if the statement's own Parse failed, it is not.
    const parsed = (connection as unknown as { parsedStatements?: Record<string, string> }).parsedStatements;
    if (parsedHere && this.name !== undefined && parsed !== undefined) delete parsed[this.name];
    proto.handleError.call(this, error, connection);
  };
  return queryAsText(query, commit === undefined ? text : `COMMIT; ${text}`);
}

/**
 * The SQL text as Kysely's `PostgresDialect` hands it to node-postgres' `client.query(config,
 * values)`: a query config (`text`, `name`) that also reads as the text wherever a string is
 * expected (String methods, template literals, `length`), e.g. in a Kysely `log` function.
 * Not a `String` object: node-postgres copies the config's own properties, one per character
 * of a `String` object (~3 ms for this statement).
 */
function namedText(text: string, name: string): string {
  const config: object = Object.create(String.prototype) as object;
  Object.defineProperties(config, {
    text: { value: text, enumerable: true },
    name: { value: name, enumerable: true },
    toString: { value: () => text },
    valueOf: { value: () => text },
    length: { value: text.length },
  });
  return config as unknown as string;
}
