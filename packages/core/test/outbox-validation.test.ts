import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { sql, type Transaction } from 'kysely';
import { createOutbox, createOutboxBuffer, InvalidConfigError, runWithTraceContext, type Outbox } from '../src';
import { expectRefusedThenUsable } from './support/refusal';

/** Messages an untyped (JavaScript) caller may pass; each field is checked before any statement. */
type Untyped = Record<string, unknown>;

const circular = (): Untyped => {
  const value: Untyped = { a: 1 };
  value.self = value;
  return value;
};

/** Each bad input, with the field the error must name. */
const BAD: Array<[string, Untyped, RegExp]> = [
  ['NUL in a header value (Postgres 22P05 before)', { topic: 't', value: {}, headers: { 'x-note': 'a\u0000b' } }, /headers\["x-note"\].*NUL/],
  ['NUL in a header name', { topic: 't', value: {}, headers: { 'x\u0000n': 'v' } }, /header name.*NUL/],
  ['a lone surrogate in a header value', { topic: 't', value: {}, headers: { 'x-note': 'a\ud800b' } }, /headers\["x-note"\].*surrogate/],
  ['a lone surrogate in a header name', { topic: 't', value: {}, headers: { 'x\udc00': 'v' } }, /header name.*surrogate/],
  ['a Buffer header value', { topic: 't', value: {}, headers: { bin: Buffer.from([1, 2]) } }, /headers\["bin"\].*string/],
  ['a number header value', { topic: 't', value: {}, headers: { n: 5 } }, /headers\["n"\].*string/],
  ['headers as an array', { topic: 't', value: {}, headers: [['a', 'b']] }, /headers must be an object/],
  ['headers as a Map', { topic: 't', value: {}, headers: new Map([['a', 'b']]) }, /headers must be an object/],
  ['an empty header name', { topic: 't', value: {}, headers: { '': 'v' } }, /header name.*empty/],
  ['a BigInt in the value', { topic: 't', value: { amount: 10n } }, /value\.amount.*BigInt/],
  ['a boxed BigInt in the value', { topic: 't', value: [Object(5n)] }, /value\[0\].*BigInt/],
  ['a circular value', { topic: 't', value: circular() }, /value\.self.*circular/],
  ['a function value', { topic: 't', value: () => 1 }, /value.*function/],
  ['a nested function', { topic: 't', value: { a: [1, { f: () => 1 }] } }, /value\.a\[1\]\.f.*function/],
  ['a symbol member', { topic: 't', value: { s: Symbol('x') } }, /value\.s.*symbol/],
  ['undefined inside an array', { topic: 't', value: [1, undefined] }, /value\[1\].*undefined/],
  ['an undefined value', { topic: 't', value: undefined }, /value is missing/],
  ['NaN in the value', { topic: 't', value: { n: Number.NaN } }, /value\.n.*NaN/],
  ['Infinity in the value', { topic: 't', value: [Number.POSITIVE_INFINITY] }, /value\[0\].*Infinity/],
  ['a Map in the value', { topic: 't', value: { m: new Map([['a', 1]]) } }, /value\.m.*Map/],
  ['a lone surrogate in a JSON string', { topic: 't', value: { s: 'x\ud83d' } }, /value\.s.*surrogate/],
  ['a lone surrogate in a JSON member name', { topic: 't', value: { ['k\udc00']: 1 } }, /value.*member name.*surrogate/],
  ['a lone surrogate in a string value', { topic: 't', value: 'abc\ud800' }, /value.*surrogate/],
  ['a number key', { topic: 't', key: 42, value: 'v' }, /key must be a string/],
  ['an object key', { topic: 't', key: { id: 1 }, value: 'v' }, /key must be a string/],
  ['a lone surrogate in a key', { topic: 't', key: 'k\ud800', value: 'v' }, /key.*surrogate/],
  ['a key over 1 KiB', { topic: 't', key: 'k'.repeat(1025), value: 'v' }, /key is 1025 bytes/],
  ['NUL in the topic', { topic: 'a\u0000b', value: 'v' }, /topic .*not a valid Kafka topic/],
  ['a topic with a space', { topic: 'bad topic', value: 'v' }, /topic .*not a valid Kafka topic/],
  ['the topic "."', { topic: '.', value: 'v' }, /topic .*not a valid Kafka topic/],
  ['the topic ".."', { topic: '..', value: 'v' }, /topic .*not a valid Kafka topic/],
  ['a topic of 250 characters', { topic: 't'.repeat(250), value: 'v' }, /topic .*not a valid Kafka topic/],
  ['a BigInt topic', { topic: 5n, value: 'v' }, /topic .*not a valid Kafka topic/],
  ['NUL in the event id', { topic: 't', value: 'v', eventId: 'a\u0000b' }, /eventId.*NUL/],
  ['a lone surrogate in the event id', { topic: 't', value: 'v', eventId: 'id\udfff' }, /eventId.*surrogate/],
  ['an empty event id', { topic: 't', value: 'v', eventId: '' }, /eventId/],
  ['a number event id', { topic: 't', value: 'v', eventId: 7 }, /eventId/],
  ['an event id over 512 bytes', { topic: 't', value: 'v', eventId: 'é'.repeat(257) }, /eventId/],
  ['the event-id header', { topic: 't', value: 'v', headers: { 'event-id': 'x' } }, /event-id.*eventId/],
  ['a message that is not an object', 5 as unknown as Untyped, /must be an object/],
];

describe('outbox input is checked before the first statement; the transaction stays usable', () => {
  const { databaseUrl } = testServices();
  let s: TestSchema;
  let outbox: Outbox;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'outbox_val', { max: 4 });
    outbox = createOutbox({ schema: s.schema });
  });
  afterAll(async () => s?.drop());

  const rows = async (like: string): Promise<Array<{ event_id: string; topic: string; key: Buffer | null; payload: Buffer | null; headers: Record<string, string> }>> =>
    (await sql<{ event_id: string; topic: string; key: Buffer | null; payload: Buffer | null; headers: Record<string, string> }>`
      SELECT event_id, topic, message_key AS key, payload, headers FROM ${sql.id(s.schema, 'outbox')} WHERE event_id LIKE ${like} ORDER BY id`.execute(s.db)).rows;

  it.each(BAD)('refuses %s with an InvalidConfigError naming the field, and a later publish in the transaction commits', async (name, message, field) => expectRefusedThenUsable(s, outbox, message, field, `ok-${name.replace(/\W+/g, '-')}`));

  it('refuses a batch with one bad message without writing any of it (also outside a transaction)', async () => {
    const batch = [
      { topic: 't', value: 'first', eventId: 'batch-1' },
      { topic: 't', value: {}, headers: { 'x-note': 'a\u0000b' }, eventId: 'batch-2' },
    ];
    await s.db.transaction().execute(async (trx) => {
      await expect(outbox.publish(trx, batch)).rejects.toThrow(/message\[1\]\.headers\["x-note"\]/);
      await outbox.publish(trx, { topic: 't', value: 'third', eventId: 'batch-3' });
    });
    await expect(outbox.publish(s.db, batch)).rejects.toBeInstanceOf(InvalidConfigError);
    expect((await rows('batch-%')).map((r) => r.event_id)).toEqual(['batch-3']);
  });

  it('the buffer (ctx.outbox of the consumer) refuses at publish time, so the handler sees the error', async () => {
    await s.db.transaction().execute(async (trx: Transaction<unknown>) => {
      const buffer = createOutboxBuffer({ schema: s.schema });
      await expect(buffer.outbox.publish(trx, { topic: 't', value: { n: 1n } })).rejects.toThrow(/value\.n.*BigInt/);
      await expect(buffer.outbox.publish(trx, [{ topic: 't', value: 'ok', eventId: 'buf-val-0' }, { topic: 't', key: 9 as unknown as string, value: 'v' }])).rejects.toThrow(/message\[1\]\.key/);
      await buffer.outbox.publish(trx, { topic: 't', value: 'kept', eventId: 'buf-val-1' });
      await buffer.flush(trx);
    });
    expect((await rows('buf-val-%')).map((r) => r.event_id)).toEqual(['buf-val-1']);
  });

  it('keeps what is valid exactly: NUL in keys and JSON strings, undefined members dropped, toJSON honoured', async () => {
    const value = { text: 'a\u0000b', emoji: '😀', skip: undefined, when: new Date(0), nested: [{ k: 'v' }], '\u0000': 1 };
    await outbox.publish(s.db, [
      { topic: 'a.b_c-D9', key: 'k\u0000ey', value, eventId: 'exact-1', headers: { 'x-émoji': '😀 ok' } },
      { topic: 't'.repeat(249), key: Buffer.from([0, 255]), value: Buffer.from([0, 1]), eventId: 'exact-2' },
      { topic: 't', key: '', value: 'plain \u0000 text', eventId: 'exact-3' },
    ]);
    const [a, b, c] = await rows('exact-%');
    expect(a?.key?.toString('utf8')).toBe('k\u0000ey');
    expect(a?.payload?.toString('utf8')).toBe(JSON.stringify(value));
    expect(JSON.parse(a?.payload?.toString('utf8') ?? '')).toEqual({ text: 'a\u0000b', emoji: '😀', when: '1970-01-01T00:00:00.000Z', nested: [{ k: 'v' }], '\u0000': 1 });
    expect(a?.headers).toEqual({ 'x-émoji': '😀 ok', 'content-type': 'application/json' });
    expect(b?.key).toEqual(Buffer.from([0, 255]));
    expect(b?.payload).toEqual(Buffer.from([0, 1]));
    expect(c?.key).toEqual(Buffer.alloc(0));
    expect(c?.payload?.toString('utf8')).toBe('plain \u0000 text');
  });

  it('drops a tracestate that is not valid text instead of failing every publish under it', async () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await runWithTraceContext({ traceparent, tracestate: 'a=b\u0000c' }, () => outbox.publish(s.db, { topic: 't', value: 'v', eventId: 'trace-1' }));
    const [row] = await rows('trace-1');
    expect(row?.headers).toEqual({ traceparent });
  });
});
