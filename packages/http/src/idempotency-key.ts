/** Why an `Idempotency-Key` header was refused. */
export type KeyProblem = 'missing' | 'multiple' | 'too-long' | 'invalid';

/** The outcome of {@link parseIdempotencyKey}. */
export type ParsedKey = { ok: true; key: string } | { ok: false; problem: KeyProblem; detail: string };

/**
 * Reads the `Idempotency-Key` header. The IETF draft defines the value as a Structured Field
 * string (`"8e03978e-…"`); plain tokens, as Stripe's clients send them, are accepted too.
 * The key (without quotes) must be 1 to `maxLength` characters matching `pattern`. Several header
 * lines, or one line holding a comma outside quotes (lines a proxy joined), are `multiple`.
 */
export function parseIdempotencyKey(raw: string | readonly string[] | undefined, maxLength: number, pattern: RegExp): ParsedKey {
  if (raw === undefined) return { ok: false, problem: 'missing', detail: 'This operation requires an Idempotency-Key header.' };
  if (typeof raw !== 'string') {
    if (raw.length === 1 && raw[0] !== undefined) return parseIdempotencyKey(raw[0], maxLength, pattern);
    if (raw.length === 0) return { ok: false, problem: 'missing', detail: 'This operation requires an Idempotency-Key header.' };
    return { ok: false, problem: 'multiple', detail: 'Send exactly one Idempotency-Key header.' };
  }
  let key = raw.trim();
  const multiple: ParsedKey = { ok: false, problem: 'multiple', detail: 'Send exactly one Idempotency-Key header.' };
  if (key.startsWith('"')) {
    const unquoted = unquote(key);
    // `"k1", "k2"`: two lines a proxy joined into one (RFC 9110 §5.3).
    if (unquoted === undefined) return key.includes(',') ? multiple : { ok: false, problem: 'invalid', detail: 'The Idempotency-Key header is not a valid quoted string.' };
    key = unquoted;
  } else if (key.includes(',')) {
    // A comma outside quotes joins field lines (RFC 9110 §5.3: a proxy may merge repeated headers
    // into one line); a key that holds a comma must be sent quoted.
    return multiple;
  }
  if (key === '') return { ok: false, problem: 'missing', detail: 'The Idempotency-Key header is empty; send a unique value such as a UUID.' };
  if (key.length > maxLength) {
    return { ok: false, problem: 'too-long', detail: `The Idempotency-Key is ${key.length} characters long; at most ${maxLength} are accepted.` };
  }
  if (!pattern.test(key)) {
    return { ok: false, problem: 'invalid', detail: 'The Idempotency-Key contains characters that are not allowed; use a UUID or another value of visible ASCII characters.' };
  }
  return { ok: true, key };
}

/** Decodes a Structured Field string (`"a\"b"` → `a"b`); `undefined` when malformed. */
function unquote(text: string): string | undefined {
  let out = '';
  for (let i = 1; i < text.length; i++) {
    const c = text[i] as string;
    if (c === '\\') {
      const next = text[++i];
      if (next !== '"' && next !== '\\') return undefined;
      out += next;
    } else if (c === '"') {
      return i === text.length - 1 ? out : undefined;
    } else {
      out += c;
    }
  }
  return undefined;
}
