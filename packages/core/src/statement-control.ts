/**
 * Finds, in SQL text about to be sent, a statement that would end the transaction it runs in.
 * The text may hold several statements (a query without parameters goes through Postgres's
 * simple query protocol, which runs them all), so it is split at top-level semicolons the way
 * Postgres's lexer sees them: not inside a quoted string ('…', E'…', U&'…'), a quoted
 * identifier ("…"), a dollar-quoted body ($$…$$, $tag$…$tag$), a comment (-- … and nested
 * /* … *\/), or the body of a SQL-standard function (CREATE … BEGIN ATOMIC … END).
 */

/** First words of a statement that ends the transaction; ROLLBACK TO (a savepoint) does not. */
const ENDS_TRANSACTION = /^(commit|end|abort|rollback(?!\s+to\b)|prepare\s+transaction)\b/i;

const isSpace = (c: string): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
const isWordStart = (c: string): boolean => /[A-Za-z_\u0080-\uffff]/.test(c);
const isWordPart = (c: string): boolean => /[A-Za-z0-9_$\u0080-\uffff]/.test(c);

/** Index just past the comment, quoted text or dollar-quoted body that starts at `i`, or `i` when none starts there. */
function skipQuoted(text: string, i: number): number {
  const c = text[i];
  const next = text[i + 1];
  if (c === '-' && next === '-') {
    const end = text.indexOf('\n', i + 2);
    return end === -1 ? text.length : end + 1;
  }
  if (c === '/' && next === '*') {
    let depth = 1;
    let j = i + 2;
    while (j < text.length && depth > 0) {
      if (text[j] === '/' && text[j + 1] === '*') {
        depth++;
        j += 2;
      } else if (text[j] === '*' && text[j + 1] === '/') {
        depth--;
        j += 2;
      } else j++;
    }
    return j;
  }
  if (c === "'" || c === '"') {
    // E'…' takes backslash escapes; elsewhere a doubled quote is the quote itself.
    const escapes = c === "'" && i > 0 && /[eE]/.test(text[i - 1] as string) && (i < 2 || !isWordPart(text[i - 2] as string));
    let j = i + 1;
    while (j < text.length) {
      if (escapes && text[j] === '\\') j += 2;
      else if (text[j] === c) {
        if (text[j + 1] === c) j += 2;
        else return j + 1;
      } else j++;
    }
    return j;
  }
  if (c === '$' && (i === 0 || !isWordPart(text[i - 1] as string))) {
    const tag = /^\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(text.slice(i, i + 64));
    if (tag !== null) {
      const end = text.indexOf(tag[0], i + tag[0].length);
      return end === -1 ? text.length : end + tag[0].length;
    }
  }
  return i;
}

/**
 * The first statement in `text` that would end the transaction, as its leading keyword(s) in
 * upper case (`COMMIT`, `END`, `ABORT`, `ROLLBACK`, `PREPARE TRANSACTION`), or `undefined`.
 * Leading comments are skipped; `ROLLBACK TO [SAVEPOINT]` is not reported.
 */
export function transactionEndingStatement(text: string): string | undefined {
  let i = 0;
  let atStart = true;
  // Inside CREATE … BEGIN ATOMIC … END, semicolons belong to the body (as in psql's lexer).
  let createStatement = false;
  let depth = 0;
  let previousWord = '';
  while (i < text.length) {
    const c = text[i] as string;
    if (isSpace(c)) {
      i++;
      continue;
    }
    const skipped = skipQuoted(text, i);
    if (skipped !== i) {
      i = skipped;
      continue;
    }
    if (atStart) {
      atStart = false;
      const match = ENDS_TRANSACTION.exec(text.slice(i, i + 32));
      if (match !== null) return (match[1] as string).toUpperCase().replace(/\s+/g, ' ');
      createStatement = /^create\b/i.test(text.slice(i, i + 7));
      depth = 0;
      previousWord = '';
    }
    if (c === ';') {
      if (depth === 0) atStart = true;
      i++;
      continue;
    }
    if (isWordStart(c)) {
      let j = i + 1;
      while (j < text.length && isWordPart(text[j] as string)) j++;
      if (createStatement) {
        const word = text.slice(i, j).toLowerCase();
        if ((word === 'atomic' && previousWord === 'begin') || (word === 'case' && depth > 0)) depth++;
        else if (word === 'end' && depth > 0) depth--;
        previousWord = word;
      }
      i = j;
      continue;
    }
    i++;
  }
  return undefined;
}
