/**
 * Canonical JSON from the raw text of a request body, for the request fingerprint. Two bodies
 * get the same canonical text exactly when they hold the same data:
 *
 * - whitespace and object member order do not matter (members are sorted by name);
 * - strings are compared after decoding escapes (`"\u00e9"` is `"é"`);
 * - numbers are compared by their exact decimal value, never through a double: `1`, `1.0`,
 *   `1e0` and `10E-1` are the same, `-0` is `0`, and `1234567890123456789` differs from
 *   `1234567890123456800`. A number is written as JavaScript writes a number with those
 *   digits, so a body of ordinary numbers canonicalises exactly as `JSON.stringify` of its parse;
 * - a member repeated in one object is refused (parsers disagree on which one wins), at any depth
 *   (the walk keeps its own stack, so no nesting is too deep for it).
 */
export type CanonicalJson = { ok: true; text: string } | { ok: false; reason: 'not-json' } | { ok: false; reason: 'duplicate-member'; path: string };

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
// A JSON string literal: no unescaped quote, backslash or control character (U+0000-U+001F).
// eslint-disable-next-line no-control-regex
const STRING = /"(?:[^"\\\u0000-\u001F]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/y;
const WHITESPACE = /[ \t\n\r]*/y;

/** The canonical text of a JSON number (as written, any length): its exact value, written as JavaScript writes numbers. */
export function canonicalNumber(literal: string): string {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (match === null) throw new RangeError(`not a JSON number: ${literal}`);
  const [, sign, whole = '', fraction = '', exponent = '0'] = match;
  let digits = (whole + fraction).replace(/^0+/, '');
  if (digits === '') return '0';
  // value = digits × 10^e, with digits free of leading and trailing zeros.
  let e = BigInt(exponent) - BigInt(fraction.length);
  const trailing = /0*$/.exec(digits)?.[0].length ?? 0;
  digits = digits.slice(0, digits.length - trailing);
  e += BigInt(trailing);
  // ECMAScript Number::toString: n is the position of the decimal point relative to the digits.
  const k = BigInt(digits.length);
  const n = k + e;
  let text: string;
  if (k <= n && n <= 21n) text = digits + '0'.repeat(Number(n - k));
  else if (0n < n && n <= 21n) text = `${digits.slice(0, Number(n))}.${digits.slice(Number(n))}`;
  else if (-6n < n && n <= 0n) text = `0.${'0'.repeat(Number(-n))}${digits}`;
  else {
    const x = n - 1n;
    text = `${digits[0] as string}${digits.length > 1 ? `.${digits.slice(1)}` : ''}e${x >= 0n ? '+' : '-'}${x >= 0n ? x : -x}`;
  }
  return sign + text;
}

class NotJson extends Error {}
class Duplicate extends Error {
  constructor(readonly path: string) {
    super('duplicate member');
  }
}

/** Canonicalises `text` (see {@link CanonicalJson}); `not-json` for anything that is not one JSON value. */
export function canonicalJsonText(text: string): CanonicalJson {
  let at = 0;
  const skip = (): void => {
    WHITESPACE.lastIndex = at;
    WHITESPACE.exec(text);
    at = WHITESPACE.lastIndex;
  };
  const token = (pattern: RegExp): string => {
    pattern.lastIndex = at;
    const match = pattern.exec(text);
    if (match === null) throw new NotJson();
    at = pattern.lastIndex;
    return match[0];
  };
  const expect = (char: string): void => {
    if (text[at] !== char) throw new NotJson();
    at++;
  };
  /** An object or array being read: what it holds so far (no recursion, so any depth is walked). */
  type Frame = { kind: 'object'; path: string; members: Map<string, string>; name: string } | { kind: 'array'; path: string; items: string[] };
  const stack: Frame[] = [];
  const pointer = (path: string, name: string): string => `${path}/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`;
  /** Reads a member name and its colon into `frame`; returns the path of its value. */
  const memberName = (frame: Frame & { kind: 'object' }): string => {
    skip();
    const name = JSON.parse(token(STRING)) as string;
    const memberPath = pointer(frame.path, name);
    if (frame.members.has(name)) throw new Duplicate(memberPath);
    frame.name = name;
    skip();
    expect(':');
    return memberPath;
  };
  /** Starts a value at `path`: its canonical text if it is complete (a scalar, `{}`, `[]`), else `undefined` after pushing its frame. */
  const open = (path: string): { text: string } | { child: string } => {
    skip();
    const c = text[at];
    if (c === '{') {
      at++;
      skip();
      if (text[at] === '}') return (at++, { text: '{}' });
      const frame: Frame = { kind: 'object', path, members: new Map(), name: '' };
      stack.push(frame);
      return { child: memberName(frame) };
    }
    if (c === '[') {
      at++;
      skip();
      if (text[at] === ']') return (at++, { text: '[]' });
      stack.push({ kind: 'array', path, items: [] });
      return { child: `${path}/0` };
    }
    if (c === '"') return { text: JSON.stringify(JSON.parse(token(STRING)) as string) };
    if (text.startsWith('true', at)) return (at += 4), { text: 'true' };
    if (text.startsWith('false', at)) return (at += 5), { text: 'false' };
    if (text.startsWith('null', at)) return (at += 4), { text: 'null' };
    return { text: canonicalNumber(token(NUMBER)) };
  };
  const value = (root: string): string => {
    let path = root;
    for (;;) {
      const opened = open(path);
      if ('child' in opened) {
        path = opened.child;
        continue;
      }
      let done: string = opened.text;
      // Hand the finished value to the innermost open container; close containers as they end.
      for (;;) {
        const frame = stack[stack.length - 1];
        if (frame === undefined) return done;
        if (frame.kind === 'array') frame.items.push(done);
        else frame.members.set(frame.name, done);
        skip();
        if (text[at] === ',') {
          at++;
          path = frame.kind === 'array' ? `${frame.path}/${frame.items.length}` : memberName(frame);
          break;
        }
        stack.pop();
        if (frame.kind === 'array') {
          expect(']');
          done = `[${frame.items.join(',')}]`;
        } else {
          expect('}');
          const names = [...frame.members.keys()].sort();
          done = `{${names.map((name) => `${JSON.stringify(name)}:${frame.members.get(name) as string}`).join(',')}}`;
        }
      }
    }
  };
  try {
    const canonical = value('');
    skip();
    if (at !== text.length) return { ok: false, reason: 'not-json' };
    return { ok: true, text: canonical };
  } catch (error) {
    if (error instanceof Duplicate) return { ok: false, reason: 'duplicate-member', path: error.path };
    // Not JSON (the walk keeps its own stack: any depth is walked): fingerprinted as raw bytes, which never equates different bodies.
    if (error instanceof NotJson || error instanceof RangeError || error instanceof SyntaxError) return { ok: false, reason: 'not-json' };
    throw error;
  }
}
