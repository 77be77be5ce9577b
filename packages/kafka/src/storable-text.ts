const LONE_SURROGATES = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Diagnostic text (an error message, which may quote the payload) as Postgres `text` and
 * `jsonb` can hold it: NUL becomes the visible escape `\u0000`, a lone UTF-16 surrogate becomes
 * U+FFFD. Storing the raw text would fail the transaction (22021/22P05) and with it the chunk,
 * on every retry.
 */
export function storableText(text: string): string {
  return text.replaceAll('\u0000', '\\u0000').replace(LONE_SURROGATES, '\ufffd');
}

/** Whether `text` can be stored as it is (no NUL, no lone surrogate). */
export function isStorableText(text: string): boolean {
  LONE_SURROGATES.lastIndex = 0;
  return !text.includes('\u0000') && !LONE_SURROGATES.test(text);
}
