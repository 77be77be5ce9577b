import { canonicalJsonText, canonicalNumber, requestFingerprint, fingerprintRequest } from '../src';

describe('canonical JSON from the raw body', () => {
  it('writes a number by its exact value, as JavaScript writes numbers', () => {
    const cases: Array<[string, string]> = [
      ['1', '1'], ['1.0', '1'], ['1e0', '1'], ['10E-1', '1'], ['0.1e1', '1'], ['-0', '0'], ['-0.0e-7', '0'], ['0', '0'],
      ['1234567890123456789', '1234567890123456789'], ['1234567890123456800', '1234567890123456800'],
      ['0.10000000000000001', '0.10000000000000001'], ['100', '100'], ['1e21', '1e+21'], ['123e19', '1.23e+21'], ['1e20', '100000000000000000000'],
      ['0.000001', '0.000001'], ['1e-7', '1e-7'], ['-12.5e-9', '-1.25e-8'], ['1e400', '1e+400'], ['1E+99999999999999999999', '1e+99999999999999999999'],
    ];
    for (const [literal, canonical] of cases) expect([literal, canonicalNumber(literal)]).toEqual([literal, canonical]);
    // Ordinary numbers canonicalise exactly as JSON.stringify writes their parse (fingerprints of such bodies did not change).
    for (const n of [0, 1, -1, 0.1, 1.5e-7, 123456789, 2 ** 53 - 1, 1e21, 5e-324, 1.7976931348623157e308]) expect(canonicalNumber(JSON.stringify(n))).toBe(JSON.stringify(n));
  });

  it('sorts members, drops whitespace, decodes escapes, and refuses repeated members (also spelled with escapes)', () => {
    expect(canonicalJsonText(' {"b" : [1, 2.0, {"y":"\\u00e9","x":null}], "a":true} ')).toEqual({ ok: true, text: '{"a":true,"b":[1,2,{"x":null,"y":"é"}]}' });
    expect(canonicalJsonText('{"a":1,"a":1}')).toEqual({ ok: false, reason: 'duplicate-member', path: '/a' });
    expect(canonicalJsonText('{"x":[{"a/b":1,"a\\/b":2}]}')).toEqual({ ok: false, reason: 'duplicate-member', path: '/x/0/a~1b' });
    for (const text of ['', '{', '{"a":1,}', '[1,]', '01', '1.', '.5', '+1', 'NaN', '"\u0001"', '{"a":1}x', "{'a':1}", 'tru']) {
      expect([text, canonicalJsonText(text).ok]).toEqual([text, false]);
    }
    // Any depth is walked (no recursion): a deep body is compared as data and its repeated members refused.
    expect(canonicalJsonText('['.repeat(200_000) + ']'.repeat(200_000))).toEqual({ ok: true, text: '['.repeat(200_000) + ']'.repeat(200_000) });
  });

  it('fingerprints: exact numbers, no body vs {}, bytes that are not UTF-8, a repeated member', () => {
    const fp = (body: unknown): string => requestFingerprint('POST', '/r', body);
    expect(fp(Buffer.from('{"orderId":1234567890123456789}'))).not.toBe(fp(Buffer.from('{"orderId":1234567890123456800}')));
    expect(fp(Buffer.from('{"n":1.0}'))).toBe(fp(Buffer.from('{"n":1}')));
    expect(fp(Buffer.from('{"n":1}'))).toBe(fp({ n: 1 })); // raw text and parsed value agree
    expect(fp({ n: 12345678901234567890n })).toBe(fp(Buffer.from('{"n":12345678901234567890}')));
    expect(fp(undefined)).not.toBe(fp(Buffer.from('{}')));
    expect(fp(Buffer.from([0x22, 0xff, 0x22]))).not.toBe(fp(Buffer.from([0x22, 0xfe, 0x22])));
    expect(fingerprintRequest('POST', '/r', Buffer.from('{"a":1,"a":2}'))).toMatchObject({ ok: false, problem: 'duplicate-member', path: '/a' });
    expect(() => fp(Buffer.from('{"a":1,"a":2}'))).toThrow(/repeats the member "\/a"/);
  });
});
