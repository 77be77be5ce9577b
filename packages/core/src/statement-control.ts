/**
 * Finds, in SQL text about to be sent, a statement that would end the transaction it runs in.
 * The text may hold several statements (a query without parameters goes through Postgres's
 * simple query protocol, which runs them all), so it is read as Postgres 15's lexer reads it
 * (standard_conforming_strings on): tokens, not characters. Quoted strings ('…', E'…' with
 * backslash escapes, B'…', X'…', N'…', U&'…', each continued across a line break as the server
 * continues it), quoted identifiers ("…", U&"…"), dollar-quoted bodies ($$…$$, $tag$…$tag$),
 * comments (-- … and nested /* … *\/) and the bodies of SQL-standard functions
 * (CREATE … BEGIN ATOMIC … END) never split a statement.
 */

type Token = { kind: 'word'; word: string } | { kind: 'string' } | { kind: 'semicolon' } | { kind: 'other'; char: string };

/** Whitespace as Postgres 15 reads it (not \v). */
const SPACE = /[ \t\n\r\f]/;
const IDENT_START = /[A-Za-z_\u0080-\uffff]/;
const IDENT_CONT = /[A-Za-z0-9_$\u0080-\uffff]/;
/** A dollar-quote delimiter at the start of the text searched (any tag length). */
const DOLLAR_DELIMITER = /\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/y;
/** What lets a quoted string continue: whitespace with a line break (and `--` comments), then a quote. */
const STRING_CONTINUES = /(?:[ \t\f]|--[^\n\r]*)*[\n\r](?:[ \t\n\r\f]+|--[^\n\r]*[\n\r])*'/y;

/** Index just past the string whose opening quote is at `open`, continuations included. */
function skipString(text: string, open: number, backslashEscapes: boolean): number {
  let j = open + 1;
  for (;;) {
    while (j < text.length) {
      const c = text[j];
      if (backslashEscapes && c === '\\') j += 2;
      else if (c === "'") {
        if (text[j + 1] === "'") j += 2;
        else break;
      } else j++;
    }
    if (j >= text.length) return text.length;
    j++; // past the closing quote
    STRING_CONTINUES.lastIndex = j;
    if (!STRING_CONTINUES.test(text)) return j;
    j = STRING_CONTINUES.lastIndex; // past the continuation's opening quote
  }
}

/** Index just past the quoted identifier whose opening quote is at `open`. */
function skipQuotedIdentifier(text: string, open: number): number {
  let j = open + 1;
  while (j < text.length) {
    if (text[j] === '"') {
      if (text[j + 1] === '"') j += 2;
      else return j + 1;
    } else j++;
  }
  return text.length;
}

/** The text's tokens, comments and whitespace left out. */
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    const next = text[i + 1];
    if (SPACE.test(c)) {
      i++;
    } else if (c === '-' && next === '-') {
      while (i < text.length && text[i] !== '\n' && text[i] !== '\r') i++;
    } else if (c === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < text.length && depth > 0) {
        if (text[i] === '/' && text[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (text[i] === '*' && text[i + 1] === '/') {
          depth--;
          i += 2;
        } else i++;
      }
    } else if (c === "'") {
      i = skipString(text, i, false);
      tokens.push({ kind: 'string' });
    } else if (c === '"') {
      i = skipQuotedIdentifier(text, i);
      tokens.push({ kind: 'other', char: '"' });
    } else if ((c === 'e' || c === 'E') && next === "'") {
      i = skipString(text, i + 1, true);
      tokens.push({ kind: 'string' });
    } else if (/[bBxXnN]/.test(c) && next === "'") {
      i = skipString(text, i + 1, false);
      tokens.push({ kind: 'string' });
    } else if ((c === 'u' || c === 'U') && next === '&' && (text[i + 2] === "'" || text[i + 2] === '"')) {
      if (text[i + 2] === "'") {
        i = skipString(text, i + 2, false);
        tokens.push({ kind: 'string' });
      } else {
        i = skipQuotedIdentifier(text, i + 2);
        tokens.push({ kind: 'other', char: '"' });
      }
    } else if (c === '$') {
      DOLLAR_DELIMITER.lastIndex = i;
      const delimiter = DOLLAR_DELIMITER.exec(text);
      if (delimiter !== null) {
        const end = text.indexOf(delimiter[0], i + delimiter[0].length);
        i = end === -1 ? text.length : end + delimiter[0].length;
        tokens.push({ kind: 'string' });
      } else {
        i++;
        while (i < text.length && /[0-9]/.test(text[i] as string)) i++;
        tokens.push({ kind: 'other', char: '$' });
      }
    } else if (IDENT_START.test(c)) {
      let j = i + 1;
      while (j < text.length && IDENT_CONT.test(text[j] as string)) j++;
      tokens.push({ kind: 'word', word: text.slice(i, j).toLowerCase() });
      i = j;
    } else if (/[0-9]/.test(c)) {
      // A number (and any junk after it, which Postgres refuses anyway).
      let j = i + 1;
      while (j < text.length && /[0-9A-Za-z_.]/.test(text[j] as string)) j++;
      tokens.push({ kind: 'other', char: '0' });
      i = j;
    } else {
      tokens.push(c === ';' ? { kind: 'semicolon' } : { kind: 'other', char: c });
      i++;
    }
  }
  return tokens;
}

const wordAt = (tokens: readonly Token[], i: number): string | undefined => {
  const t = tokens[i];
  return t?.kind === 'word' ? t.word : undefined;
};

/** The transaction-ending statement that starts at token `i`, if it is one. */
function endingStatementAt(tokens: readonly Token[], i: number): string | undefined {
  switch (wordAt(tokens, i)) {
    case 'commit':
      return 'COMMIT';
    case 'end':
      return 'END';
    case 'abort':
      return 'ABORT';
    case 'rollback': {
      // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name keeps the transaction.
      const after = wordAt(tokens, i + 1) === 'work' || wordAt(tokens, i + 1) === 'transaction' ? i + 2 : i + 1;
      return wordAt(tokens, after) === 'to' ? undefined : 'ROLLBACK';
    }
    case 'prepare':
      // PREPARE TRANSACTION 'gid'; `PREPARE transaction AS …` names a prepared statement.
      return wordAt(tokens, i + 1) === 'transaction' && tokens[i + 2]?.kind === 'string' ? 'PREPARE TRANSACTION' : undefined;
    default:
      return undefined;
  }
}

/**
 * Statement heads in `tokens`, split at semicolons. With `bodies`, a CREATE statement's
 * `BEGIN ATOMIC … END` body (its CASE … END inside counted too) does not split it. Returns the
 * first transaction-ending statement, and whether the bodies' BEGIN and END balanced.
 */
function scan(tokens: readonly Token[], bodies: boolean): { statement: string | undefined; balanced: boolean } {
  let start = 0;
  let depth = 0;
  let create = false;
  for (let i = 0; i <= tokens.length; i++) {
    if (i === start) {
      const statement = endingStatementAt(tokens, i);
      if (statement !== undefined) return { statement, balanced: true };
      create = bodies && wordAt(tokens, i) === 'create';
      depth = 0;
    }
    const token = tokens[i];
    if (token === undefined) break;
    if (token.kind === 'semicolon') {
      if (depth === 0) start = i + 1;
      continue;
    }
    if (!create || token.kind !== 'word') continue;
    // A keyword right after AS or a dot is only a name (a column label, a field).
    const previous = tokens[i - 1];
    if ((previous?.kind === 'word' && previous.word === 'as') || (previous?.kind === 'other' && previous.char === '.')) continue;
    if (token.word === 'begin' && wordAt(tokens, i + 1) === 'atomic') depth++;
    else if (token.word === 'case' && depth > 0) depth++;
    else if (token.word === 'end' && depth > 0) depth--;
  }
  return { statement: undefined, balanced: depth === 0 };
}

/**
 * The first statement in `text` that would end the transaction, as its leading keyword(s) in
 * upper case (`COMMIT`, `END`, `ABORT`, `ROLLBACK`, `PREPARE TRANSACTION`), or `undefined`.
 * `ROLLBACK [WORK | TRANSACTION] TO …` is not reported. When a function body's BEGIN ATOMIC and
 * END do not balance (the text is not what this reading expects), every semicolon splits, so a
 * misread body can only refuse a statement, never let one through.
 */
export function transactionEndingStatement(text: string): string | undefined {
  const tokens = tokenize(text);
  const read = scan(tokens, true);
  if (read.statement !== undefined || read.balanced) return read.statement;
  return scan(tokens, false).statement;
}
