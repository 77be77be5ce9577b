import { Kysely, PostgresDialect } from 'kysely';
import { Pool } from 'pg';
import { InvalidConfigError, InvalidIdentifierError } from '@effectively/core';
import { canonicalJson, createIdempotency, parseIdempotencyKey, requestFingerprint, resolveIdempotencyOptions } from '../src';

describe('request fingerprint', () => {
  it('ignores key order and whitespace but not values, method or route', () => {
    const a = requestFingerprint('post', '/payments', Buffer.from('{"b":[1,{"y":2,"x":1}],"a":"é"}'));
    expect(requestFingerprint('POST', '/payments', { a: 'é', b: [1, { x: 1, y: 2 }] })).toBe(a);
    expect(requestFingerprint('POST', '/payments', ' {\n "a" : "é", "b" : [ 1, { "x":1, "y":2 } ] } ')).toBe(a);
    expect(requestFingerprint('POST', '/payments', { a: 'é', b: [{ x: 1, y: 2 }, 1] })).not.toBe(a);
    expect(requestFingerprint('PUT', '/payments', { a: 'é', b: [1, { x: 1, y: 2 }] })).not.toBe(a);
    expect(requestFingerprint('POST', '/refunds', { a: 'é', b: [1, { x: 1, y: 2 }] })).not.toBe(a);
  });

  it('hashes non-JSON bodies as raw bytes and tells an empty body from an empty string', () => {
    expect(requestFingerprint('POST', '/r', Buffer.from('a=1&b=2'))).not.toBe(requestFingerprint('POST', '/r', Buffer.from('b=2&a=1')));
    expect(requestFingerprint('POST', '/r', undefined)).toBe(requestFingerprint('POST', '/r', Buffer.alloc(0)));
    expect(requestFingerprint('POST', '/r', undefined)).not.toBe(requestFingerprint('POST', '/r', '""'));
  });

  it('serialises canonically', () => {
    expect(canonicalJson({ z: 1, a: { c: undefined, b: null }, m: [undefined, 'x'] })).toBe('{"a":{"b":null},"m":[null,"x"],"z":1}');
  });
});

describe('Idempotency-Key header', () => {
  const parse = (raw: string | string[] | undefined): ReturnType<typeof parseIdempotencyKey> => parseIdempotencyKey(raw, 255, /^[\x21-\x7E]+$/);
  it('accepts plain tokens and Structured Field strings', () => {
    expect(parse('8e03978e-40d5-43e8-bc93-6894a57f9324')).toEqual({ ok: true, key: '8e03978e-40d5-43e8-bc93-6894a57f9324' });
    expect(parse('"8e03978e-40d5"')).toEqual({ ok: true, key: '8e03978e-40d5' });
    expect(parse('"a\\"b"')).toEqual({ ok: true, key: 'a"b' });
    expect(parse(['k1'])).toEqual({ ok: true, key: 'k1' });
  });
  it('refuses missing, repeated, too long and malformed keys with a reason', () => {
    expect(parse(undefined)).toMatchObject({ ok: false, problem: 'missing' });
    expect(parse('')).toMatchObject({ ok: false, problem: 'missing' });
    expect(parse(['a', 'b'])).toMatchObject({ ok: false, problem: 'multiple' });
    expect(parse('x'.repeat(256))).toMatchObject({ ok: false, problem: 'too-long' });
    expect(parse('a b')).toMatchObject({ ok: false, problem: 'invalid' });
    expect(parse('ключ')).toMatchObject({ ok: false, problem: 'invalid' });
    expect(parse('"unterminated')).toMatchObject({ ok: false, problem: 'invalid' });
    expect(parse('"a"b"')).toMatchObject({ ok: false, problem: 'invalid' });
  });
});

describe('configuration', () => {
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new Pool({ connectionString: 'postgres://nowhere.invalid/x' }) }) });
  afterAll(() => db.destroy());

  it('fills in defaults and freezes the result without touching the caller object', () => {
    const input = { db, schema: 'payments' };
    const o = resolveIdempotencyOptions(input);
    expect(o).toMatchObject({ schema: 'payments', ttlMs: 86_400_000, leaseMs: 30_000, transactional: true, requireKey: true, storeClientErrors: true, storeServerErrors: false, maxKeyLength: 255, replayHeader: 'idempotent-replayed' });
    expect(Object.isFrozen(o)).toBe(true);
    expect(input).toEqual({ db, schema: 'payments' });
  });

  it('refuses bad values with messages that say what to fix', () => {
    expect(() => createIdempotency({ db: {} as Kysely<unknown> })).toThrow(/db must be a Kysely instance/);
    expect(() => createIdempotency({ db, schema: 'Robert"); DROP' })).toThrow(InvalidIdentifierError);
    expect(() => createIdempotency({ db, leaseMs: 10 })).toThrow(InvalidConfigError);
    expect(() => createIdempotency({ db, leaseMs: 60_000, ttlMs: 30_000 })).toThrow(/ttlMs \(30000\) must be longer than leaseMs \(60000\)/);
    expect(() => createIdempotency({ db, leaseMs: 1_000, heartbeatMs: 1_000 })).toThrow(/heartbeatMs/);
    expect(() => createIdempotency({ db, maxKeyLength: 0 })).toThrow(/maxKeyLength must be an integer from 1/);
    expect(() => createIdempotency({ db, keyPattern: /a/g })).toThrow(/without the g or y flag/);
    expect(() => createIdempotency({ db, storedHeaders: ['content type'] })).toThrow(/storedHeaders\[0\] must be an HTTP header name/);
    expect(() => createIdempotency({ db, transactional: 'yes' as unknown as boolean })).toThrow(/transactional must be true or false/);
  });
});
