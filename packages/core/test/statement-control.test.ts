import { CompiledQuery } from 'kysely';
import { refuseTransactionControl, transactionEndingStatement, TransactionControlRefusedError } from '../src';

// Pure text checks: what a handler may send through the transaction the library opened for it.
describe('transactionEndingStatement', () => {
  it.each([
    ['COMMIT', 'COMMIT'],
    ['commit', 'COMMIT'],
    ['COMMIT AND CHAIN', 'COMMIT'],
    ['  /* done */ -- really\n end', 'END'],
    ['END TRANSACTION', 'END'],
    ['abort', 'ABORT'],
    ['ROLLBACK', 'ROLLBACK'],
    ['rollback work', 'ROLLBACK'],
    ["PREPARE TRANSACTION 'x'", 'PREPARE TRANSACTION'],
    ['prepare\n  transaction \'x\'', 'PREPARE TRANSACTION'],
    // Several statements in one text (the simple query protocol runs them all).
    ['SELECT 1; COMMIT', 'COMMIT'],
    ['SELECT 1;commit', 'COMMIT'],
    ["INSERT INTO t VALUES ('a'); /* then */ ROLLBACK", 'ROLLBACK'],
    ['SELECT 1;;END', 'END'],
    ['SELECT $1; COMMIT', 'COMMIT'],
    ["SELECT '\\'; COMMIT", 'COMMIT'], // a standard string: the backslash is only a character
    ["SELECT e'\\\\'; COMMIT", 'COMMIT'], // an escape string holding one backslash
    ["SELECT 'it''s'; COMMIT", 'COMMIT'],
    ['SELECT "a""b"; END', 'END'],
    ['SELECT $$x$$; ABORT', 'ABORT'],
    ['CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END; COMMIT', 'COMMIT'],
  ])('%j ends the transaction: %s', (text, statement) => {
    expect(transactionEndingStatement(text)).toBe(statement);
  });

  it.each([
    'SELECT 1',
    'ROLLBACK TO SAVEPOINT s',
    'rollback to s',
    'SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s',
    'SELECT 1 AS commit',
    'SELECT end_date, endless FROM t',
    'UPDATE t SET status = \'end\' WHERE id = $1',
    "SELECT 'a; COMMIT'",
    "SELECT 'it''s; commit'",
    "SELECT E'\\'; COMMIT'",
    'SELECT "x;commit"',
    'SELECT $$; COMMIT$$',
    'SELECT $t$ $$; commit $t$',
    '-- ; commit\nSELECT 1',
    'SELECT 1 -- ; commit',
    '/* /* ; commit */ */ SELECT 1',
    'DO $$BEGIN COMMIT; END$$', // Postgres refuses COMMIT in a DO block run inside a transaction
    'CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END',
    'create procedure p() language sql begin atomic insert into t values (1); end;',
    'SELECT a$b$c FROM t; SELECT 1',
    '',
  ])('%j does not', (text) => {
    expect(transactionEndingStatement(text)).toBeUndefined();
  });

  it('refuseTransactionControl throws TransactionControlRefusedError naming the statement, and lets others through', () => {
    expect(() => refuseTransactionControl(CompiledQuery.raw('SELECT 1; COMMIT'))).toThrow(TransactionControlRefusedError);
    expect(() => refuseTransactionControl(CompiledQuery.raw('select 1; end'))).toThrow(/Refused "END" from a handler/);
    expect(() => refuseTransactionControl(CompiledQuery.raw('ROLLBACK TO SAVEPOINT s'))).not.toThrow();
    expect(() => refuseTransactionControl(undefined)).not.toThrow();
  });
});
