import { Client, Pool } from 'pg';
import { CompiledQuery, Kysely, PostgresDialect, RawNode, sql, type KyselyPlugin, type OperationNode, type RootOperationNode, type Transaction } from 'kysely';
import { testServices, uniqueName } from '@effectively/testkit';
import { guardTransaction, refuseTransactionControl, transactionEndingStatement, TransactionControlRefusedError } from '../src';

// What a handler may send through the transaction the library opened for it. Every text below is
// also sent to Postgres inside an open transaction (the simple query protocol, which runs every
// statement of a text), so each expectation is checked against the server, not only stated.
const tag = 'a'.repeat(70);

/** Texts that end the transaction, the statement reported, and a statement run before the text in the same transaction. */
const ENDING: Array<[string, string, string?]> = [
  ['COMMIT', 'COMMIT'],
  ['commit', 'COMMIT'],
  ['COMMIT AND CHAIN', 'COMMIT'],
  ['  /* done */ -- really\n end', 'END'],
  ['END TRANSACTION', 'END'],
  ['end work', 'END'],
  ['abort', 'ABORT'],
  ['ABORT TRANSACTION', 'ABORT'],
  ['ROLLBACK', 'ROLLBACK'],
  ['rollback work', 'ROLLBACK'],
  ['ROLLBACK AND CHAIN', 'ROLLBACK'],
  ["PREPARE TRANSACTION 'effectively-test-gid'", 'PREPARE TRANSACTION'],
  ["PREPARE/**/TRANSACTION 'effectively-test-gid'", 'PREPARE TRANSACTION'],
  [`PREPARE${' '.repeat(30)} TRANSACTION 'effectively-test-gid'`, 'PREPARE TRANSACTION'],
  // Several statements in one text.
  ['SELECT 1; COMMIT', 'COMMIT'],
  ['SELECT 1;commit', 'COMMIT'],
  ['SELECT 1; --x\rCOMMIT', 'COMMIT'],
  ["SELECT 'a'; /* then */ ROLLBACK", 'ROLLBACK'],
  ['SELECT 1;;END', 'END'],
  ["SELECT '\\'; COMMIT", 'COMMIT'], // a standard string: the backslash is only a character
  ["SELECT e'\\\\'; COMMIT", 'COMMIT'], // an escape string holding one backslash
  ["SELECT 'it''s'; COMMIT", 'COMMIT'],
  ['SELECT "a""b" FROM (SELECT 1 AS "a""b") t; END', 'END'],
  ['SELECT $$x$$; ABORT', 'ABORT'],
  // An escape string continued on the next line keeps its backslash escapes.
  ["SELECT E'x'\n'\\''; COMMIT; SELECT 'y'", 'COMMIT'],
  ["SELECT E'x' -- c\n'\\''; COMMIT; SELECT 'y'", 'COMMIT'],
  ["SELECT E'x'\r'\\''; COMMIT; SELECT 'y'", 'COMMIT'],
  [`SELECT $${tag}$'$${tag}$; COMMIT; SELECT 'x'`, 'COMMIT'],
  ['CREATE TABLE begin (atomic int); COMMIT', 'COMMIT'],
  ['CREATE FUNCTION f1() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END; COMMIT', 'COMMIT'],
  ['CREATE FUNCTION f2() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END; COMMIT', 'COMMIT'],
  // BEGIN ATOMIC opens a body only in CREATE FUNCTION|PROCEDURE, outside parentheses; CASE and END elsewhere are names.
  ['CREATE VIEW v1 AS SELECT begin atomic FROM (VALUES (1)) s(begin); END', 'END'],
  ['CREATE VIEW v2 AS SELECT begin atomic FROM (VALUES (1)) s(begin); COMMIT; SELECT 1 end', 'COMMIT'],
  ['CREATE TABLE t3 AS SELECT begin atomic FROM (VALUES (1)) s(begin); ROLLBACK; SELECT 1 end', 'ROLLBACK'],
  ['CREATE PROCEDURE p4() LANGUAGE sql BEGIN ATOMIC SELECT 1 case; END; COMMIT; SELECT 1 end', 'COMMIT'],
  ["CREATE OR REPLACE FUNCTION f5() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 case; END; PREPARE TRANSACTION 'effectively-test-gid'; SELECT 1 end", 'PREPARE TRANSACTION'],
  ['CREATE DOMAIN atomic AS int; CREATE FUNCTION f6(begin atomic) RETURNS int LANGUAGE sql RETURN 1; COMMIT; SELECT 1 end', 'COMMIT'],
  // Backslashes as the session reads them.
  ["SELECT '\\'';COMMIT;SELECT '\\''", 'COMMIT', 'SET LOCAL standard_conforming_strings = off'],
  ["SELECT E'\u00c1\\'; COMMIT; SELECT 1 --'", 'COMMIT', "SET LOCAL client_encoding = 'SJIS'"],
  ["SELECT $\u0101\\$'$\u0101\\$; COMMIT; SELECT 'x'", 'COMMIT', "SET LOCAL client_encoding = 'SJIS'"],
  ["SELECT E'\u00e9\\'\u0101\\'; COMMIT; SELECT E'\u00e9\\'\u0101\\'", 'COMMIT', "SET LOCAL backslash_quote = on; SET LOCAL client_encoding = 'SJIS'"],
];

/** Texts that leave the transaction open. */
const KEEPING: string[] = [
  'SELECT 1',
  'SAVEPOINT s; ROLLBACK TO SAVEPOINT s',
  'SAVEPOINT s; rollback to s',
  'SAVEPOINT s; ROLLBACK WORK TO SAVEPOINT s',
  'SAVEPOINT s; ROLLBACK TRANSACTION TO s',
  'SAVEPOINT s; ROLLBACK/**/TO s',
  'SAVEPOINT s; ROLLBACK -- x\nTO s',
  `SAVEPOINT s; ROLLBACK${' '.repeat(30)} TO s`,
  'SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s',
  'SELECT 1 AS commit',
  'SELECT 1 AS end_date, 2 AS endless',
  "SELECT 'end' AS status",
  "SELECT 'a; COMMIT'",
  "SELECT 'it''s; commit'",
  "SELECT E'\\'; COMMIT'",
  "SELECT E'x'\n'\\'; COMMIT; SELECT '",
  "SELECT 'x'\n'; COMMIT'",
  'SELECT 1 AS "x;commit"',
  'SELECT $$; COMMIT$$',
  'SELECT $t$ $$; commit $t$',
  `SELECT $${tag}$; COMMIT$${tag}$`,
  '-- ; commit\nSELECT 1',
  'SELECT 1 -- ; commit',
  '/* /* ; commit */ */ SELECT 1',
  'PREPARE transaction AS SELECT 1',
  'PREPARE transaction(int) AS SELECT $1',
  'CREATE FUNCTION k1() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END',
  'create procedure k2() language sql begin atomic select 1; end;',
  'CREATE FUNCTION k3() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS end; END',
  'CREATE TABLE kt (x int); CREATE FUNCTION k4() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT t.x FROM kt t; SELECT 2; END',
  'SELECT 1 AS a$b$c; SELECT 1',
  'CREATE FUNCTION k5() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END end; END',
  'CREATE FUNCTION k6() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT (SELECT 1 end); END',
  'CREATE FUNCTION k7() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 case; END',
  'CREATE PROCEDURE k8() LANGUAGE sql BEGIN ATOMIC END',
  "SELECT 'C:\\dir\\' AS path",
];

/** Texts Postgres fails (the transaction is aborted, not ended): refusing them costs nothing. */
const FAILING: Array<[string, string | undefined]> = [
  ['SELECT $1; COMMIT', 'COMMIT'],
  ["COMMIT PREPARED 'effectively-test-none'", 'COMMIT'],
  ["ROLLBACK PREPARED 'effectively-test-none'", 'ROLLBACK'],
  ['DO $$BEGIN COMMIT; END$$', undefined],
];

/** \v is whitespace from Postgres 16 on (the COMMIT runs); Postgres 15 fails the text. */
const VERTICAL_TAB = 'SELECT 1;\u000bCOMMIT';

describe('transactionEndingStatement', () => {
  it.each(ENDING)('%j ends the transaction: %s', (text, statement) => {
    expect(transactionEndingStatement(text)).toBe(statement);
  });

  it.each(KEEPING)('%j does not', (text) => {
    expect(transactionEndingStatement(text)).toBeUndefined();
  });

  it.each(FAILING)('%j (which Postgres fails): %s', (text, statement) => {
    expect(transactionEndingStatement(text)).toBe(statement);
  });

  it('reads long texts in linear time (no backtracking blow-up after a string at the end of a line)', () => {
    const indented = `SELECT id\n  FROM t\n WHERE status = 'open'\n${' '.repeat(200)}AND kind = 'x'`;
    expect(transactionEndingStatement(indented)).toBeUndefined();
    expect(transactionEndingStatement(`SELECT 'a'${'-'.repeat(200)}`)).toBeUndefined();
    const long = `${"SELECT 'x', E'\\'', $$y$$, \"z\"; -- c\n".repeat(20_000)}COMMIT`;
    expect(transactionEndingStatement(long)).toBe('COMMIT');
  });

  it('reads \\v as whitespace (Postgres 16 and later do)', () => {
    expect(transactionEndingStatement(VERTICAL_TAB)).toBe('COMMIT');
  });

  it('refuseTransactionControl throws TransactionControlRefusedError naming the statement, and lets others through', () => {
    expect(() => refuseTransactionControl(CompiledQuery.raw('SELECT 1; COMMIT'))).toThrow(TransactionControlRefusedError);
    expect(() => refuseTransactionControl(CompiledQuery.raw('select 1; end'))).toThrow(/Refused "END" from a handler/);
    expect(() => refuseTransactionControl(CompiledQuery.raw('ROLLBACK TO SAVEPOINT s'))).not.toThrow();
    expect(() => refuseTransactionControl(undefined)).not.toThrow();
  });
});

describe('guardTransaction: every path user code has to the connection', () => {
  const { databaseUrl } = testServices();
  let db: Kysely<unknown>;
  const schema = uniqueName('guard_paths');
  beforeAll(async () => {
    db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new Pool({ connectionString: databaseUrl, max: 2 }) }) });
    await sql`CREATE SCHEMA ${sql.id(schema)}`.execute(db);
  });
  afterAll(async () => {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
    await db.destroy();
  });

  /** A plugin user code adds after the guard: it appends `; commit` to every query it sees. */
  const appendsCommit: KyselyPlugin = {
    transformQuery: ({ node }) => ({ ...node, endModifiers: [...((node as { endModifiers?: readonly OperationNode[] }).endModifiers ?? []), RawNode.createWithSql('; commit')] }) as RootOperationNode,
    transformResult: ({ result }) => Promise.resolve(result),
  };

  const attempts: Array<[string, (g: Transaction<unknown>) => Promise<unknown>]> = [
    ['raw SQL added to a builder (modifyEnd)', (g) => g.selectNoFrom(sql<number>`1`.as('one')).modifyEnd(sql`; COMMIT`).execute()],
    ['a function name (eb.fn)', (g) => g.selectNoFrom((eb) => eb.fn('now(); commit; select now', []).as('x')).execute()],
    ['an aggregate function name (eb.fn.agg)', (g) => g.selectNoFrom((eb) => eb.fn.agg('count(1); commit; select count', [sql.lit(1)]).as('x')).execute()],
    ['an explain format', (g) => g.selectNoFrom(sql.lit(1).as('x')).explain('json) select 1; commit; --' as never)],
    ['a plugin added after the guard', (g) => g.withPlugin(appendsCommit).selectNoFrom(sql.lit(1).as('x')).execute()],
    ['a plugin added to a builder', (g) => g.selectNoFrom(sql.lit(1).as('x')).withPlugin(appendsCommit).execute()],
    ['schema builders without plugins', (g) => g.schema.withoutPlugins().createTable('t2').addColumn('a', 'integer').modifyEnd(sql`; commit`).execute()],
    ['a schema builder with a plugin', (g) => g.schema.withPlugin(appendsCommit).createTable('t3').addColumn('a', 'integer').execute()],
    ['withoutPlugins', (g) => g.withoutPlugins().selectNoFrom(sql<number>`1`.as('one')).modifyEnd(sql`; END`).execute()],
    ["the executor's connection", (g) => g.getExecutor().provideConnection((c) => c.executeQuery(CompiledQuery.raw('COMMIT')))],
    ['a stream', async (g) => {
      for await (const row of g.getExecutor().stream(CompiledQuery.raw('SELECT 1; COMMIT'), 1)) void row;
    }],
    ['startTransaction', async (g) => (await g.startTransaction().execute()).commit().execute()],
    ['a query whose sql is not a string', (g) => g.executeQuery({ sql: { text: 'COMMIT' }, parameters: [], queryId: { queryId: 'x' } } as never)],
    ['a quoted value after standard_conforming_strings is turned off', async (g) => {
      await sql`SET LOCAL standard_conforming_strings = off`.execute(g);
      return g.selectNoFrom(sql.lit("\\'; commit; --").as('x')).execute();
    }],
  ];

  it.each(attempts)('refuses COMMIT sent through %s; the transaction stays the same', async (_name, attempt) => {
    await db.transaction().execute(async (t) => {
      const g = guardTransaction(t.withSchema(schema));
      const before = (await sql<{ x: string }>`SELECT txid_current()::text AS x`.execute(t)).rows[0]?.x;
      await expect(attempt(g)).rejects.toBeInstanceOf(TransactionControlRefusedError);
      const after = (await sql<{ x: string }>`SELECT txid_current()::text AS x`.execute(t)).rows[0]?.x;
      expect(after).toBe(before);
    });
  });

  it('sends a query whose sql reads differently the second time as it was checked', async () => {
    await db.transaction().execute(async (t) => {
      const g = guardTransaction(t);
      const before = (await sql<{ x: string }>`SELECT txid_current()::text AS x`.execute(t)).rows[0]?.x;
      let reads = 0;
      const query = { parameters: [], queryId: { queryId: 'y' }, get sql() { return reads++ > 0 ? 'COMMIT' : 'SELECT 1 AS one'; } };
      const result = await g.getExecutor().provideConnection((c) => c.executeQuery<{ one: number }>(query as never));
      expect(result.rows).toEqual([{ one: 1 }]);
      expect((await sql<{ x: string }>`SELECT txid_current()::text AS x`.execute(t)).rows[0]?.x).toBe(before);
    });
  });

  it('lets ordinary statements through: builders, templates, savepoints, values with quotes and semicolons', async () => {
    await db.transaction().execute(async (g0) => {
      const g = guardTransaction(g0.withSchema(schema) as Transaction<{ notes: { note: string } }>);
      await g.schema.createTable('notes').addColumn('note', 'text').execute();
      await g.insertInto('notes').values({ note: "it's; COMMIT" }).execute();
      await sql`SAVEPOINT s; ROLLBACK TO SAVEPOINT s`.execute(g);
      expect((await g.selectFrom('notes').select('note').execute()).map((r) => r.note)).toEqual(["it's; COMMIT"]);
      expect((await g.selectNoFrom(sql<string>`${"'; COMMIT"}::text`.as('v')).execute())[0]?.v).toBe("'; COMMIT");
    });
  });
});

describe('what Postgres does with those texts inside a transaction', () => {
  const { databaseUrl } = testServices();
  const schema = uniqueName('stmt_control');
  let client: Client;

  beforeAll(async () => {
    client = new Client({ connectionString: databaseUrl });
    await client.connect();
    await client.query(`CREATE SCHEMA "${schema}"`);
  });
  afterAll(async () => {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await client.end();
  });

  /** Runs `text` after BEGIN; says whether the transaction ended (a new one runs after it, chained or not), stayed open, or failed. */
  async function outcome(text: string, setup?: string): Promise<'ended' | 'open' | 'failed'> {
    await client.query(`SET search_path TO "${schema}"`);
    await client.query('BEGIN');
    if (setup !== undefined) await client.query(setup);
    const { rows } = await client.query<{ x: string }>('SELECT txid_current()::text AS x');
    await client.query(text).catch(() => undefined);
    const after = await client.query<{ x: string }>('SELECT txid_current()::text AS x').then(
      (r) => r.rows[0]?.x,
      () => undefined,
    );
    await client.query('ROLLBACK');
    await client.query("ROLLBACK PREPARED 'effectively-test-gid'").catch(() => undefined);
    await client.query('DEALLOCATE ALL');
    await client.query('RESET search_path');
    // What a text that committed made is dropped, so the next text starts alike.
    await client.query(`DROP SCHEMA "${schema}" CASCADE; CREATE SCHEMA "${schema}"`);
    if (after === undefined) return 'failed';
    return after === rows[0]?.x ? 'open' : 'ended';
  }

  it('ends the transaction for every text reported, keeps it for every other text, and fails the rest', async () => {
    const seen: Record<string, string[]> = { ended: [], open: [], failed: [] };
    for (const [text, , setup] of ENDING) seen[await outcome(text, setup)]?.push(text);
    for (const text of KEEPING) seen[await outcome(text)]?.push(text);
    for (const [text] of FAILING) seen[await outcome(text)]?.push(text);
    expect(seen).toEqual({ ended: ENDING.map(([t]) => t), open: KEEPING, failed: FAILING.map(([t]) => t) });
    const { rows } = await client.query<{ v: number }>("SELECT current_setting('server_version_num')::int AS v");
    expect(await outcome(VERTICAL_TAB)).toBe((rows[0]?.v ?? 0) >= 160000 ? 'ended' : 'failed');
  });
});
