import { InvalidConfigError } from './errors';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Where `text` holds a UTF-16 surrogate without its pair (not Unicode text: UTF-8 encoding
 * would silently replace it with U+FFFD, and Postgres `text`/`jsonb` refuse its escape), or -1.
 */
export function loneSurrogateAt(text: string): number {
  const match = LONE_SURROGATE.exec(text);
  return match === null ? -1 : match.index;
}

/** Objects that `JSON.stringify` turns into `{}` (or drops), losing their contents without an error. */
const LOSSY: ReadonlyArray<[new (...args: never[]) => object, string]> = [
  [Map, 'a Map'],
  [Set, 'a Set'],
  [WeakMap, 'a WeakMap'],
  [WeakSet, 'a WeakSet'],
  [ArrayBuffer, 'an ArrayBuffer'],
  [DataView, 'a DataView'],
  [RegExp, 'a RegExp'],
  [Promise, 'a Promise'],
  [WeakRef, 'a WeakRef'],
  [SharedArrayBuffer, 'a SharedArrayBuffer'],
];

/** A path into a JSON value as written in JavaScript: `value.a[2].b`, `value["x y"]`. */
function member(path: string, name: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(name) ? `${path}.${name}` : `${path}[${JSON.stringify(name)}]`;
}

/**
 * Encodes `value` as `JSON.stringify` does (same text for every value it accepts), refusing
 * instead of silently changing what cannot be represented: BigInt, functions, symbols,
 * `undefined` and holes in arrays or at the top, NaN, ±Infinity and invalid Dates (`JSON.stringify` writes `null`),
 * circular references, Map/Set/ArrayBuffer/WeakRef/Error and similar objects (written as `{}`),
 * typed arrays other than a Buffer (written as `{"0":…}`), strings and
 * member names with lone surrogates. `undefined` object members are left out, as by
 * `JSON.stringify` (that is what an optional property means). `toJSON` is honoured.
 *
 * @param where how the error names the value, e.g. `outbox message[3].value`
 * @throws InvalidConfigError naming the path of the first offending part and what to do.
 */
export function encodeJson(value: unknown, where: string): string {
  const ancestors = new Set<object>();
  const refuse = (path: string, problem: string): never => {
    throw new InvalidConfigError(`${path} ${problem}.`);
  };
  const text = (s: string, path: string, what: string): string => {
    const at = loneSurrogateAt(s);
    if (at >= 0) refuse(path, `${what} has a lone UTF-16 surrogate at index ${at}, which is not Unicode text; fix the string (or send bytes as a Buffer)`);
    return JSON.stringify(s);
  };
  const encode = (input: unknown, key: string, path: string): string | undefined => {
    let v = input;
    if (v instanceof Date && (v as { toJSON?: unknown }).toJSON === Date.prototype.toJSON && Number.isNaN(v.getTime())) {
      refuse(path, 'is an invalid Date, which JSON.stringify writes as null; send null or a valid Date');
    }
    if ((typeof v === 'object' && v !== null) || typeof v === 'bigint') {
      const toJson = (v as { toJSON?: unknown }).toJSON;
      if (typeof toJson === 'function') v = (toJson as (key: string) => unknown).call(v, key);
    }
    if (v instanceof Number) v = Number(v);
    else if (v instanceof String) v = String(v);
    else if (v instanceof Boolean) v = v.valueOf();
    else if (v instanceof BigInt) v = v.valueOf();
    switch (typeof v) {
      case 'string':
        return text(v, path, 'string');
      case 'number':
        if (!Number.isFinite(v)) refuse(path, `is ${String(v)}, which JSON cannot represent (JSON.stringify would write null); send null or a finite number`);
        return JSON.stringify(v);
      case 'boolean':
        return v ? 'true' : 'false';
      case 'bigint':
        return refuse(path, `is a BigInt (${v}n), which JSON cannot represent; convert it to a string (exact) or a number`);
      case 'undefined':
      case 'function':
      case 'symbol':
        return undefined;
      default:
        break;
    }
    if (v === null) return 'null';
    const object = v as object;
    for (const [type, name] of LOSSY) {
      if (object instanceof type) refuse(path, `is ${name}, which JSON.stringify writes as {} (its contents would be lost); convert it to a plain object or array`);
    }
    if (object instanceof Error) {
      refuse(path, `is ${/^[AEIOU]/.test(object.name) ? 'an' : 'a'} ${object.name} (an Error), which JSON.stringify writes as {} (its message and stack are not enumerable); convert it, e.g. { message: err.message }`);
    }
    // Buffers were turned into { type, data } by their toJSON above; other views are not data JSON keeps.
    if (ArrayBuffer.isView(object)) {
      refuse(path, `is a ${object.constructor.name}, which JSON.stringify writes as an object of indexes ({"0":…}); convert it with Array.from(…), or pass bytes as a Buffer for the whole value`);
    }
    if (ancestors.has(object)) refuse(path, 'is a circular reference (the value contains itself), which JSON cannot represent; remove the cycle');
    ancestors.add(object);
    try {
      if (Array.isArray(object)) {
        // An index loop, not map: map skips the holes of a sparse array (join then writes `[1,,3]`, not JSON).
        const items: string[] = [];
        for (let i = 0; i < object.length; i++) {
          const itemPath = `${path}[${i}]`;
          if (!(i in object)) refuse(itemPath, 'is a hole of a sparse array, which JSON.stringify would write as null; fill it (null) or remove it');
          const item: unknown = object[i];
          const encoded = encode(item, String(i), itemPath);
          if (encoded === undefined) refuse(itemPath, `is ${kindOf(item)}, which JSON.stringify would write as null; use null or remove it`);
          items.push(encoded as string);
        }
        return `[${items.join(',')}]`;
      }
      const members: string[] = [];
      for (const name of Object.keys(object)) {
        const memberPath = member(path, name);
        const item = (object as Record<string, unknown>)[name];
        const encoded = encode(item, name, memberPath);
        if (encoded === undefined) {
          if (item === undefined || (typeof item === 'object' && item !== null)) continue; // optional member (or toJSON returned undefined): left out, as JSON.stringify does
          refuse(memberPath, `is ${kindOf(item)}, which JSON.stringify would drop without a word; remove it or convert it to data`);
        }
        members.push(`${text(name, path, `member name ${JSON.stringify(name)}`)}:${encoded as string}`);
      }
      return `{${members.join(',')}}`;
    } finally {
      ancestors.delete(object);
    }
  };
  let encoded: string | undefined;
  try {
    encoded = encode(value, '', where);
  } catch (error) {
    if (error instanceof InvalidConfigError) throw error;
    if (error instanceof RangeError) throw new InvalidConfigError(`${where} is nested too deeply to encode as JSON; flatten it.`);
    throw new InvalidConfigError(`${where} could not be encoded as JSON (${error instanceof Error ? error.message : String(error)}); pass plain data.`);
  }
  if (encoded === undefined) refuse(where, `is ${kindOf(value)}, which JSON cannot represent; pass data (null for a tombstone)`);
  return encoded as string;
}

function kindOf(value: unknown): string {
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return 'a symbol';
  return 'undefined';
}
