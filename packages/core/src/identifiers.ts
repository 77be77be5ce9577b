import { InvalidIdentifierError } from './errors';

/** Postgres truncates identifiers longer than 63 bytes (NAMEDATALEN - 1), which makes names collide. */
export const MAX_IDENTIFIER_BYTES = 63;

const SAFE = /^[a-z_][a-z0-9_]*$/;

/**
 * Words Postgres reserves (SQL key words that cannot be table or schema names unquoted),
 * plus the schemas a library must never write into.
 */
const RESERVED = new Set([
  'all', 'analyse', 'analyze', 'and', 'any', 'array', 'as', 'asc', 'asymmetric', 'both', 'case', 'cast',
  'check', 'collate', 'column', 'constraint', 'create', 'current_catalog', 'current_date', 'current_role',
  'current_time', 'current_timestamp', 'current_user', 'default', 'deferrable', 'desc', 'distinct', 'do',
  'else', 'end', 'except', 'false', 'fetch', 'for', 'foreign', 'from', 'grant', 'group', 'having', 'in',
  'initially', 'intersect', 'into', 'lateral', 'leading', 'limit', 'localtime', 'localtimestamp', 'not',
  'null', 'offset', 'on', 'only', 'or', 'order', 'placing', 'primary', 'references', 'returning', 'select',
  'session_user', 'some', 'symmetric', 'table', 'then', 'to', 'trailing', 'true', 'union', 'unique', 'user',
  'using', 'variadic', 'when', 'where', 'window', 'with',
]);

const FORBIDDEN_SCHEMAS = new Set(['pg_catalog', 'information_schema', 'pg_toast']);

/**
 * Checks that `name` can be used as a Postgres schema or table name without quoting and
 * returns it. Only lower-case ASCII letters, digits and `_` are accepted, starting with a
 * letter or `_`, at most 63 bytes, not a reserved word. Nothing is ever escaped or truncated:
 * an unsafe name is refused with an error that says what to change.
 *
 * @param name the candidate identifier
 * @param what what the name is for, used in the error message (e.g. `"schema"`)
 */
export function assertIdentifier(name: unknown, what: string): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new InvalidIdentifierError(`${what} must be a non-empty string, got ${JSON.stringify(name)}.`);
  }
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_IDENTIFIER_BYTES) {
    throw new InvalidIdentifierError(
      `${what} ${JSON.stringify(name)} is ${bytes} bytes long; Postgres truncates identifiers to ${MAX_IDENTIFIER_BYTES} bytes, so pick a shorter name.`,
    );
  }
  if (!SAFE.test(name)) {
    throw new InvalidIdentifierError(
      `${what} ${JSON.stringify(name)} is not a safe identifier: use only lower-case letters a-z, digits and "_", starting with a letter or "_".`,
    );
  }
  if (RESERVED.has(name)) {
    throw new InvalidIdentifierError(`${what} ${JSON.stringify(name)} is an SQL reserved word; choose another name.`);
  }
  if (what === 'schema' && (FORBIDDEN_SCHEMAS.has(name) || name.startsWith('pg_'))) {
    throw new InvalidIdentifierError(`schema ${JSON.stringify(name)} belongs to Postgres itself; use a schema of your own.`);
  }
  return name;
}
