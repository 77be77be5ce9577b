/**
 * Finds, in SQL text about to be sent, a statement that would end the transaction it runs in.
 * The text may hold several statements (a query without parameters goes through Postgres's
 * simple query protocol, which runs them all), so it is read as Postgres's lexer reads it:
 * tokens, not characters. Quoted strings ('…', E'…' with backslash escapes, B'…', X'…', N'…',
 * U&'…', each continued across a line break as the server continues it), quoted identifiers
 * ("…", U&"…"), dollar-quoted bodies ($$…$$, $tag$…$tag$), comments (-- … and nested /* … *\/)
 * and the bodies of SQL-standard functions (CREATE FUNCTION|PROCEDURE … BEGIN ATOMIC … END) never
 * split a statement.
 *
 * Where a backslash's meaning depends on the session (`standard_conforming_strings` off makes it
 * an escape in '…' too; a multi-byte `client_encoding` such as SJIS can take it as the second
 * byte of the character before it), the text is read every way, and a statement any reading
 * finds is reported.
 */

type Token = { kind: 'word'; word: string } | { kind: 'string' } | { kind: 'semicolon' } | { kind: 'other'; char: number };

/** How backslashes read inside quoted strings. */
interface Reading {
  /** Backslash escapes in plain '…' strings too (`standard_conforming_strings = off`). */
  plainEscapes: boolean;
}

const READINGS: readonly Reading[] = [{ plainEscapes: false }, { plainEscapes: true }];

/**
 * Client encodings Postgres accepts whose two-byte (GB18030: also four-byte) characters can end
 * in an ASCII byte such as a backslash: byte ranges of a lead byte and of the bytes after it.
 * node-postgres sends UTF-8; a session that switched `client_encoding` to one of these makes
 * the server pair those bytes differently, swallowing the ASCII byte after some non-ASCII
 * characters.
 */
const TWO_BYTE_ENCODINGS: ReadonlyArray<{ name: string; lead: (b: number) => boolean; trail: (b: number) => boolean; fourByte?: boolean }> = [
  { name: 'SJIS', lead: (b) => (b >= 0x81 && b <= 0x9f) || (b >= 0xe0 && b <= 0xfc), trail: (b) => (b >= 0x40 && b <= 0x7e) || (b >= 0x80 && b <= 0xfc) },
  { name: 'BIG5', lead: (b) => b >= 0x81 && b <= 0xfe, trail: (b) => (b >= 0x40 && b <= 0x7e) || (b >= 0xa1 && b <= 0xfe) },
  { name: 'GBK', lead: (b) => b >= 0x81 && b <= 0xfe, trail: (b) => (b >= 0x40 && b <= 0x7e) || (b >= 0x80 && b <= 0xfe) },
  { name: 'UHC', lead: (b) => b >= 0x81 && b <= 0xfe, trail: (b) => (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x81 && b <= 0xfe) },
  { name: 'GB18030', lead: (b) => b >= 0x81 && b <= 0xfe, trail: (b) => (b >= 0x40 && b <= 0x7e) || (b >= 0x80 && b <= 0xfe), fourByte: true },
  { name: 'JOHAB', lead: (b) => (b >= 0x84 && b <= 0xd3) || (b >= 0xd8 && b <= 0xde) || (b >= 0xe0 && b <= 0xf9), trail: (b) => (b >= 0x31 && b <= 0x7e) || (b >= 0x91 && b <= 0xfe) },
];

/**
 * `text` as the server reads it when the session's client encoding is `encoding`: the UTF-8
 * bytes paired into that encoding's characters, each multi-byte character (and any other
 * non-ASCII byte) standing as one non-ASCII character. A sequence the encoding does not allow
 * makes Postgres refuse the whole text, so reading it one way or another changes nothing.
 */
function readAs(text: string, encoding: (typeof TWO_BYTE_ENCODINGS)[number]): string {
  const bytes = Buffer.from(text, 'utf8');
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i] as number;
    if (b < 0x80) {
      out += String.fromCharCode(b);
      i++;
    } else if (encoding.fourByte === true && encoding.lead(b) && (bytes[i + 1] ?? 0) >= 0x30 && (bytes[i + 1] ?? 0) <= 0x39) {
      out += '\u00ff';
      i += 4;
    } else if (encoding.lead(b) && i + 1 < bytes.length && encoding.trail(bytes[i + 1] as number)) {
      out += '\u00ff';
      i += 2;
    } else {
      out += '\u00ff';
      i++;
    }
  }
  return out;
}

const NON_ASCII_THEN_BACKSLASH = /[\u0080-\uffff]\\/;

const QUOTE = 0x27;
const DOUBLE_QUOTE = 0x22;
const BACKSLASH = 0x5c;
const DOLLAR = 0x24;
const SEMICOLON = 0x3b;
const DASH = 0x2d;
const SLASH = 0x2f;
const STAR = 0x2a;
const AMPERSAND = 0x26;
const LF = 0x0a;
const CR = 0x0d;

/** Whitespace: space, \t, \n, \r, \f, and \v (whitespace from Postgres 16 on; in 15 a syntax error, so reading it as whitespace can only refuse). */
const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === LF || c === CR || c === 0x0c || c === 0x0b;
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isLetter = (c: number): boolean => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const isIdentStart = (c: number): boolean => isLetter(c) || c === 0x5f || c >= 0x80;
const isIdentCont = (c: number): boolean => isIdentStart(c) || isDigit(c) || c === DOLLAR;

/** A dollar-quote delimiter at `lastIndex` (any tag length; a tag has no `$`). */
const DOLLAR_DELIMITER = /\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/y;
/**
 * What lets a quoted string continue at `lastIndex`: horizontal whitespace and a `--` comment,
 * a line break, then whitespace and whole comment lines, then a quote. Each repetition consumes
 * one character or one whole comment line, so a failed match backtracks linearly.
 */
const STRING_CONTINUES = /[ \t\f\v]*(?:--[^\n\r]*)?[\n\r](?:[ \t\n\r\f\v]|--[^\n\r]*[\n\r])*'/y;

/** Index just past the string whose opening quote is at `open`, continuations included. */
function skipString(text: string, open: number, escapes: boolean): number {
  let j = open + 1;
  for (;;) {
    for (;;) {
      if (j >= text.length) return text.length;
      const c = text.charCodeAt(j);
      if (c === BACKSLASH && escapes) j += 2;
      else if (c === QUOTE) {
        if (text.charCodeAt(j + 1) === QUOTE) j += 2;
        else break;
      } else j++;
    }
    j++; // past the closing quote
    STRING_CONTINUES.lastIndex = j;
    if (!STRING_CONTINUES.test(text)) return j;
    j = STRING_CONTINUES.lastIndex; // past the continuation's opening quote
  }
}

/** Index just past the quoted identifier whose opening quote is at `open`. */
function skipQuotedIdentifier(text: string, open: number): number {
  let j = open + 1;
  for (;;) {
    const close = text.indexOf('"', j);
    if (close === -1) return text.length;
    if (text.charCodeAt(close + 1) !== DOUBLE_QUOTE) return close + 1;
    j = close + 2;
  }
}

/** The text's tokens as `reading` sees them, comments and whitespace left out. */
function tokenize(text: string, reading: Reading): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    const next = text.charCodeAt(i + 1);
    if (isSpace(c)) {
      i++;
    } else if (c === DASH && next === DASH) {
      while (i < text.length && text.charCodeAt(i) !== LF && text.charCodeAt(i) !== CR) i++;
    } else if (c === SLASH && next === STAR) {
      let depth = 1;
      i += 2;
      while (i < text.length && depth > 0) {
        const d = text.charCodeAt(i);
        if (d === SLASH && text.charCodeAt(i + 1) === STAR) {
          depth++;
          i += 2;
        } else if (d === STAR && text.charCodeAt(i + 1) === SLASH) {
          depth--;
          i += 2;
        } else i++;
      }
    } else if (c === QUOTE) {
      i = skipString(text, i, reading.plainEscapes);
      tokens.push({ kind: 'string' });
    } else if (c === DOUBLE_QUOTE) {
      i = skipQuotedIdentifier(text, i);
      tokens.push({ kind: 'other', char: DOUBLE_QUOTE });
    } else if ((c === 0x45 || c === 0x65) && next === QUOTE) {
      // E'…': backslash escapes whatever the session says.
      i = skipString(text, i + 1, true);
      tokens.push({ kind: 'string' });
    } else if ((c === 0x42 || c === 0x62 || c === 0x58 || c === 0x78 || c === 0x4e || c === 0x6e) && next === QUOTE) {
      // B'…', X'…' and N'…' read like '…'.
      i = skipString(text, i + 1, reading.plainEscapes);
      tokens.push({ kind: 'string' });
    } else if ((c === 0x55 || c === 0x75) && next === AMPERSAND && (text.charCodeAt(i + 2) === QUOTE || text.charCodeAt(i + 2) === DOUBLE_QUOTE)) {
      if (text.charCodeAt(i + 2) === QUOTE) {
        i = skipString(text, i + 2, reading.plainEscapes);
        tokens.push({ kind: 'string' });
      } else {
        i = skipQuotedIdentifier(text, i + 2);
        tokens.push({ kind: 'other', char: DOUBLE_QUOTE });
      }
    } else if (c === DOLLAR) {
      DOLLAR_DELIMITER.lastIndex = i;
      const delimiter = DOLLAR_DELIMITER.exec(text);
      if (delimiter !== null) {
        const end = text.indexOf(delimiter[0], i + delimiter[0].length);
        i = end === -1 ? text.length : end + delimiter[0].length;
        tokens.push({ kind: 'string' });
      } else {
        i++;
        while (i < text.length && isDigit(text.charCodeAt(i))) i++;
        tokens.push({ kind: 'other', char: DOLLAR });
      }
    } else if (isIdentStart(c)) {
      let j = i + 1;
      while (j < text.length && isIdentCont(text.charCodeAt(j))) j++;
      tokens.push({ kind: 'word', word: text.slice(i, j).toLowerCase() });
      i = j;
    } else if (isDigit(c)) {
      // A number (and any junk after it, which Postgres 15 refuses anyway).
      let j = i + 1;
      while (j < text.length && (isDigit(text.charCodeAt(j)) || isLetter(text.charCodeAt(j)) || text.charCodeAt(j) === 0x2e || text.charCodeAt(j) === 0x5f)) j++;
      tokens.push({ kind: 'other', char: 0x30 });
      i = j;
    } else {
      tokens.push(c === SEMICOLON ? { kind: 'semicolon' } : { kind: 'other', char: c });
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

/** Whether the statement starting at token `i` is CREATE [OR REPLACE] FUNCTION|PROCEDURE. */
function createsRoutine(tokens: readonly Token[], i: number): boolean {
  if (wordAt(tokens, i) !== 'create') return false;
  const kind = wordAt(tokens, i + 1) === 'or' && wordAt(tokens, i + 2) === 'replace' ? wordAt(tokens, i + 3) : wordAt(tokens, i + 1);
  return kind === 'function' || kind === 'procedure';
}

/**
 * The first transaction-ending statement in `tokens`, and whether every function body it
 * entered was closed. With `bodies`, a CREATE FUNCTION|PROCEDURE's `BEGIN ATOMIC` (outside
 * parentheses) opens a body: its statements end with `;`, and END right after ATOMIC or a `;`
 * closes it. A statement in a body that would end the transaction is reported all the same (no
 * body may hold one).
 */
function scan(tokens: readonly Token[], bodies: boolean): { statement: string | undefined; closed: boolean } {
  let inBody = false;
  let routine = false;
  let parens = 0;
  let statementStart = true;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i] as Token;
    if (statementStart) {
      statementStart = false;
      if (inBody && wordAt(tokens, i) === 'end') {
        inBody = false;
        continue;
      }
      const statement = endingStatementAt(tokens, i);
      if (statement !== undefined) return { statement, closed: true };
      if (!inBody) {
        routine = bodies && createsRoutine(tokens, i);
        parens = 0;
      }
    }
    if (token.kind === 'semicolon') {
      statementStart = true;
      continue;
    }
    if (!routine || inBody) continue;
    if (token.kind === 'other' && token.char === 0x28) parens++;
    else if (token.kind === 'other' && token.char === 0x29) parens = Math.max(0, parens - 1);
    else if (parens === 0 && token.kind === 'word' && token.word === 'begin' && wordAt(tokens, i + 1) === 'atomic') {
      inBody = true;
      i++; // ATOMIC
      statementStart = true; // END may follow at once (an empty body)
    }
  }
  return { statement: undefined, closed: !inBody };
}

/**
 * The first statement in `text` that would end the transaction, as its leading keyword(s) in
 * upper case (`COMMIT`, `END`, `ABORT`, `ROLLBACK`, `PREPARE TRANSACTION`), or `undefined`.
 * `ROLLBACK [WORK | TRANSACTION] TO …` is not reported. Where a function body is left open (the
 * text is not what this reading expects), every semicolon splits, so a misread body can only
 * refuse a statement, never let one through.
 */
export function transactionEndingStatement(text: string): string | undefined {
  // A backslash right after a non-ASCII character may be part of that character in another
  // client encoding; without a backslash, every reading of quoted strings is the same.
  const texts = NON_ASCII_THEN_BACKSLASH.test(text) ? [text, ...TWO_BYTE_ENCODINGS.map((e) => readAs(text, e))] : [text];
  const readings = text.includes('\\') ? READINGS : READINGS.slice(0, 1);
  for (const variant of texts) {
    for (const reading of readings) {
      const tokens = tokenize(variant, reading);
      const read = scan(tokens, true);
      const statement = read.statement ?? (read.closed ? undefined : scan(tokens, false).statement);
      if (statement !== undefined) return statement;
    }
  }
  return undefined;
}
