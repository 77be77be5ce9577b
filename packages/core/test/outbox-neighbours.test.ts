import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { createOutbox, createOutboxBuffer, type Outbox, type OutboxMessage } from '../src';
import { expectRefusedThenUsable } from './support/refusal';

/**
 * The neighbours of issue 11's outbox inputs: other control characters and unpaired surrogates in
 * other fields, headers as bytes, JSON values `JSON.stringify` would silently change (array holes,
 * invalid dates). Each bad one is an InvalidConfigError naming the field before any statement.
 */
type Untyped = Record<string, unknown>;

const revoked = (): Untyped => {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  return proxy;
};
const holey = [1, 2, 3];
delete holey[1]; // [1, , 3]
const BAD: Array<[string, Untyped, RegExp]> = [
  ['a hole in an array (JSON.stringify writes null; was written as the invalid JSON [1,,3])', { topic: 't', value: { list: holey } }, /value\.list\[1\].*hole/],
  ['an array of only holes', { topic: 't', value: new Array(2) }, /value\[0\].*hole/],
  ['a hole in a nested array', { topic: 't', value: { a: [{ b: [Object.assign(new Array<number>(3), { 0: 0, 2: 2 })] }] } }, /value\.a\[0\]\.b\[0\]\[1\].*hole/],
  ['an invalid Date (toJSON gives null)', { topic: 't', value: { when: new Date(Number.NaN) } }, /value\.when.*invalid Date/],
  ['an invalid Date as the value', { topic: 't', value: new Date('nope') }, /value .*invalid Date/],
  ['a Buffer header value', { topic: 't', value: 'v', headers: { bin: Buffer.from('abc') } }, /headers\["bin"\].*string/],
  ['a Uint8Array header value', { topic: 't', value: 'v', headers: { bin: new Uint8Array([1]) } }, /headers\["bin"\].*string/],
  ['an undefined header value', { topic: 't', value: 'v', headers: { a: undefined } }, /headers\["a"\].*string/],
  ['a null header value', { topic: 't', value: 'v', headers: { a: null } }, /headers\["a"\].*string/],
  ['a high surrogate at the end of a header value', { topic: 't', value: 'v', headers: { a: 'ok\ud83d' } }, /headers\["a"\].*surrogate/],
  ['a low surrogate first in a header name', { topic: 't', value: 'v', headers: { '\ude00x': 'v' } }, /header name.*surrogate/],
  ['NUL as the whole header value', { topic: 't', value: 'v', headers: { a: '\u0000' } }, /headers\["a"\].*NUL/],
  ['a reversed surrogate pair in the event id', { topic: 't', value: 'v', eventId: '\ude00\ud83d' }, /eventId.*surrogate/],
  ['a lone surrogate in the topic', { topic: 'a\ud800', value: 'v' }, /topic .*not a valid Kafka topic/],
  ['a control character in the topic', { topic: 'a\u0001b', value: 'v' }, /topic .*not a valid Kafka topic/],
  ['an empty topic', { topic: '', value: 'v' }, /topic .*not a valid Kafka topic/],
  ['a lone surrogate deep in a nested member name', { topic: 't', value: { a: [{ ['\udbff']: 1 }] } }, /value\.a\[0\].*member name.*surrogate/],
  ['a BigInt deep in nested arrays', { topic: 't', value: [[[1, [2n]]]] }, /value\[0\]\[0\]\[1\]\[0\].*BigInt/],
  ['-Infinity in nested arrays', { topic: 't', value: [[Number.NEGATIVE_INFINITY]] }, /value\[0\]\[0\].*Infinity/],
  ['a Set in the value', { topic: 't', value: { s: new Set([1]) } }, /value\.s.*Set/],
  ['a boolean key', { topic: 't', key: true, value: 'v' }, /key must be a string/],
  ['a BigInt key', { topic: 't', key: 5n, value: 'v' }, /key must be a string/],
  ['a key of 1025 bytes in multi-byte characters', { topic: 't', key: 'é'.repeat(512) + 'x', value: 'v' }, /key is 1025 bytes/],
  ['a headers string', { topic: 't', value: 'v', headers: 'a: b' }, /headers must be an object/],
  ['an Error in the value (JSON.stringify writes {}: message and stack are not enumerable)', { topic: 't', value: { err: new Error('boom') } }, /value\.err.*Error/],
  ['a TypeError as the value', { topic: 't', value: new TypeError('boom') }, /value .*Error/],
  ['a Float32Array in the value (JSON.stringify writes {"0":1.5})', { topic: 't', value: { f: new Float32Array([1.5]) } }, /value\.f.*Float32Array/],
  ['a Uint8Array nested in the value', { topic: 't', value: { b: new Uint8Array([1]) } }, /value\.b.*Uint8Array/],
  ['an Int16Array as the value', { topic: 't', value: new Int16Array([1]) }, /value .*Int16Array/],
  ['a SharedArrayBuffer in the value', { topic: 't', value: { s: new SharedArrayBuffer(2) } }, /value\.s.*SharedArrayBuffer/],
  ['a WeakRef in the value', { topic: 't', value: { w: new WeakRef({}) } }, /value\.w.*WeakRef/],
  ['a symbol-named header (Object.entries would drop it)', { topic: 't', value: 'v', headers: { a: 'b', [Symbol('s')]: 'x' } }, /header name.*Symbol\(s\)/],
  ['a header whose getter throws', { topic: 't', value: 'v', headers: { get a(): string { throw new Error('getter'); } } }, /headers.*could not be read.*getter/],
  ['a topic whose getter throws', { get topic(): string { throw new Error('getter'); }, value: 'v' }, /message.*could not be read.*getter/],
  ['revoked proxy headers', { topic: 't', value: 'v', headers: revoked() }, /headers.*could not be read.*revoked/],
  ['a revoked proxy as the message', revoked(), /message.*could not be read.*revoked/],
];

describe('neighbours of the outbox inputs: refused before the first statement, the transaction stays usable', () => {
  const { databaseUrl } = testServices();
  let s: TestSchema;
  let outbox: Outbox;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'outbox_nb', { max: 4 });
    outbox = createOutbox({ schema: s.schema });
  });
  afterAll(async () => s?.drop());

  const rows = async (like: string): Promise<Array<{ event_id: string; key: Buffer | null; payload: Buffer | null; headers: Record<string, string> }>> =>
    (await sql<{ event_id: string; key: Buffer | null; payload: Buffer | null; headers: Record<string, string> }>`
      SELECT event_id, message_key AS key, payload, headers FROM ${sql.id(s.schema, 'outbox')} WHERE event_id LIKE ${like} ORDER BY id`.execute(s.db)).rows;

  it.each(BAD)('publish refuses %s', async (name, message, field) => expectRefusedThenUsable(s, outbox, message, field, `nb-${name.replace(/\W+/g, '-')}`));

  it.each(BAD)('ctx.outbox (the buffer) refuses %s at publish', async (name, message, field) => {
    const id = `nbb-${name.replace(/\W+/g, '-')}`;
    await s.db.transaction().execute(async (trx) => {
      const buffer = createOutboxBuffer({ schema: s.schema });
      await expect(buffer.outbox.publish(trx, [{ topic: 't', value: 'first' }, message as unknown as OutboxMessage])).rejects.toThrow(field);
      await buffer.outbox.publish(trx, { topic: 't', value: 'kept', eventId: id });
      expect((await buffer.flush(trx)).inserted).toBe(1);
    });
    expect(await rows(id)).toHaveLength(1);
  });

  it('keeps other control characters, emoji pairs and -0 exactly, and every payload it writes as JSON is JSON', async () => {
    const controls = Array.from({ length: 31 }, (_, i) => String.fromCharCode(i + 1)).join('') + '\u007f\u0085\u2028\u2029';
    const value = { controls, pair: '😀', zero: -0, big: [[1e308, -1e-308, 123456789012345680000]], date: new Date(0) };
    await outbox.publish(s.db, [
      { topic: 't', key: controls, value, eventId: `nbk-${controls}`, headers: { [`x-${controls}`]: controls, pair: '😀' } },
      { topic: 't', value: [[], {}, [null]], eventId: 'nbk-2' },
    ]);
    const [a, b] = await rows('nbk-%');
    expect(a?.key?.toString('utf8')).toBe(controls);
    expect(a?.event_id).toBe(`nbk-${controls}`);
    expect(a?.headers).toEqual({ [`x-${controls}`]: controls, pair: '😀', 'content-type': 'application/json' });
    const text = a?.payload?.toString('utf8') ?? '';
    expect(text).toBe(JSON.stringify(value));
    expect(JSON.parse(text)).toEqual({ controls, pair: '😀', zero: 0, big: [[1e308, -1e-308, 123456789012345680000]], date: '1970-01-01T00:00:00.000Z' });
    expect(JSON.parse(b?.payload?.toString('utf8') ?? '')).toEqual([[], {}, [null]]);
  });
});
