import { createHash } from 'node:crypto';
import { createQueryId, type CompiledQuery, type Kysely, type QueryResult, type RawBuilder, type Transaction } from 'kysely';

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
  async execute<R>(db: Db, key: string, args: A, build: (...args: A) => RawBuilder<unknown>): Promise<QueryResult<R>> {
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
    const sql = this.named ? namedText(c.sql, c.name) : c.sql;
    return db.executeQuery<R>({ query: c.query, queryId: createQueryId(), sql, parameters });
  }
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
