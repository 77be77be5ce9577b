import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { sql } from 'kysely';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, parseIdempotencyKey, requestFingerprint, type Idempotency, type JsonValue } from '../src';
import { startApp, type AdapterName, type RunningApp, type TestHandler } from './adapters';
import type { ClientResponse } from './helpers';

/** Sends raw bytes with exactly the header lines given (an array value is sent once per line). */
function raw(baseUrl: string, path: string, headers: Record<string, string | string[]>, body?: Buffer | string, method = 'POST'): Promise<ClientResponse> {
  const bytes = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  return new Promise((resolve, reject) => {
    const req = request(baseUrl + path, { method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const all = Buffer.concat(chunks);
        const out: Record<string, string> = {};
        for (const [name, value] of Object.entries(res.headers)) if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value;
        resolve({ status: res.statusCode ?? 0, headers: out, body: all, text: all.toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    for (const [name, value] of Object.entries(headers)) req.setHeader(name, value);
    req.setHeader('content-length', String(bytes?.length ?? 0));
    req.end(bytes);
  });
}

describe('neighbours of the fingerprint of an already parsed body (the low-level API)', () => {
  const fp = (body: unknown): string => requestFingerprint('POST', '/r', body);
  it('never equates values that differ: NaN and ±Infinity are not null; a Map or Set is not {} (undefined items are null, as in JSON)', () => {
    expect(fp({ n: Number.NaN })).not.toBe(fp({ n: null }));
    expect(fp({ n: Number.POSITIVE_INFINITY })).not.toBe(fp({ n: null }));
    expect(fp({ n: Number.POSITIVE_INFINITY })).not.toBe(fp({ n: Number.NEGATIVE_INFINITY }));
    expect(fp([undefined])).toBe(fp([null]));
    expect(fp({ m: new Map([['a', 1]]) })).not.toBe(fp({ m: {} }));
    expect(fp({ m: new Map([['a', 1]]) })).not.toBe(fp({ m: new Map([['a', 2]]) }));
    expect(fp({ s: new Set([1]) })).not.toBe(fp({ s: new Set([2]) }));
    expect(fp({ s: new Set([1]) })).not.toBe(fp({ s: [1] }));
    // What JSON can hold still agrees with its text.
    expect(fp({ b: 1, a: [-0, 1e21, 'é'] })).toBe(fp(Buffer.from('{"a":[0,1e21,"\\u00e9"],"b":1.0}')));
  });
});

describe('neighbours of a repeated Idempotency-Key: lines a proxy joined into one', () => {
  const P = /^[\x21-\x7E]+$/;
  it.each(['k1, k2', 'k1,k2', 'k1 ,k2', '"k1", "k2"', '"k1","k2"', 'k1, "k2"', 'same, same'])('%s is "send exactly one"', (line) => {
    expect(parseIdempotencyKey(line, 255, P)).toEqual({ ok: false, problem: 'multiple', detail: 'Send exactly one Idempotency-Key header.' });
  });
  it('a quoted key may hold a comma; a trailing comma alone is not a second key', () => {
    expect(parseIdempotencyKey('"a,b"', 255, P)).toEqual({ ok: true, key: 'a,b' });
  });
});

/**
 * The neighbours of issue 11's HTTP inputs (fingerprints, repeated headers, Retry-After), the same
 * answer over Express and Fastify.
 */
describe.each<AdapterName>(['express', 'fastify'])('neighbours of the same-request rules, over %s', (adapter) => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  let idempotency: Idempotency;
  let app: RunningApp;
  let runs = 0;
  const handler: TestHandler = async (body) => {
    runs++;
    // A body nested deeper than JSON.stringify's stack allows is not echoed.
    const echo = ((): JsonValue => {
      try {
        JSON.stringify(body);
        return body as JsonValue;
      } catch {
        return 'too deep to echo';
      }
    })();
    return { status: 201, json: { run: runs, body: echo } };
  };
  const JSON_TYPE = { 'content-type': 'application/json' };
  const post = (key: string | string[] | undefined, body: Buffer | string | undefined, headers: Record<string, string | string[]> = JSON_TYPE, path = '/items'): Promise<ClientResponse> =>
    raw(app.url, path, key === undefined ? headers : { ...headers, 'idempotency-key': key }, body);
  const replayed = (r: ClientResponse): [number, string | undefined] => [r.status, r.headers['idempotent-replayed']];
  const problemType = (r: ClientResponse): string => (JSON.parse(r.text) as { type: string }).type;

  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, `http_nb_${adapter}`, { max: 6 });
    idempotency = createIdempotency({ db: ts.db, schema: ts.schema, leaseMs: 20_000 });
    app = await startApp(adapter, idempotency, handler);
  });
  afterAll(async () => {
    await app?.close();
    await ts?.drop();
  });

  it('numbers: exponent forms, 0.1e1, negative zero and huge numbers in nested arrays are compared by value', async () => {
    const k1 = randomUUID();
    expect((await post(k1, '{"a":[[100, 1, 0]]}')).status).toBe(201);
    for (const same of ['{"a":[[1E+2, 0.1e1, -0]]}', '{"a":[[1e2, 10e-1, -0.0E-3]]}', '{"a":[[100.000, 1.0, 0e99]]}']) expect(replayed(await post(k1, same))).toEqual([201, 'true']);
    expect((await post(k1, '{"a":[[100, 1, 0.0000000000000000000001]]}')).status).toBe(422);
    const k2 = randomUUID();
    const huge = '9'.repeat(400);
    expect((await post(k2, `[[[${huge}]], -${huge}.5]`)).status).toBe(201);
    expect(replayed(await post(k2, `[[[${huge}.000]], -${huge}5e-1]`))).toEqual([201, 'true']);
    expect((await post(k2, `[[[${huge}]], -${huge}.50000000000000000000001]`)).status).toBe(422);
    expect((await post(k2, `[[[${'9'.repeat(399)}8]], -${huge}.5]`)).status).toBe(422);
  });

  it('a number with a leading zero or "+", or a trailing dot, is not JSON: 400 from the body parser, the key never claimed', async () => {
    const before = runs;
    const key = randomUUID();
    for (const body of ['{"n":01}', '{"n":+1}', '{"n":1.}', '{"n":.5}', '{"n":0x10}', '{"n":NaN}']) {
      const r = await post(key, body);
      expect([body, r.status]).toEqual([body, 400]);
    }
    expect(runs).toBe(before);
    expect((await post(key, '{"n":1}')).status).toBe(201);
  });

  it('members repeated through escapes at nested levels are refused with 400 before the key is claimed', async () => {
    const before = runs;
    const key = randomUUID();
    for (const body of ['{"x":[{"\\u0061":1,"a":2}]}', '{"x":{"y":{"a\\u0062":1,"ab":1}}}', '[[{"\\/":1,"/":2}]]', '{"é":1,"\\u00e9":2}', '{"__proto__":1,"\\u005f_proto__":2}']) {
      const r = await post(key, body);
      expect([body, r.status]).toEqual([body, 400]);
      // Fastify's parser refuses a "__proto__" member itself (400, its own error document) before the route runs.
      if (!(adapter === 'fastify' && body.includes('__proto__'))) expect([body, problemType(r)]).toEqual([body, expect.stringContaining('json-member-repeated')]);
    }
    expect(runs).toBe(before);
  });

  it('a deeply nested body (10,000 levels, within the parsers\' limits) is compared as data: its repeated member is refused, its formatting ignored', async () => {
    const depth = 10_000;
    const before = runs;
    const dup = await post(randomUUID(), `${'['.repeat(depth)}{"a":1,"a":2}${']'.repeat(depth)}`);
    expect(dup.status).toBe(400);
    expect(problemType(dup)).toContain('json-member-repeated');
    expect(runs).toBe(before);
    const key = randomUUID();
    expect((await post(key, `${'['.repeat(depth)}{"b":1,"a":2}${']'.repeat(depth)}`)).status).toBe(201);
    expect(replayed(await post(key, `${'[ '.repeat(depth)}{"a":2.0, "b":1}${' ]'.repeat(depth)}`))).toEqual([201, 'true']);
    expect((await post(key, `${'['.repeat(depth)}{"a":2,"b":3}${']'.repeat(depth)}`)).status).toBe(422);
  });

  it('a body with a UTF-8 byte order mark is the same request as without it (the parsers drop the BOM); its repeated members are refused', async () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    const key = randomUUID();
    const first = await post(key, Buffer.concat([bom, Buffer.from('{"a":1,"b":[2]}')]));
    expect(first.status).toBe(201);
    expect(JSON.parse(first.text)).toMatchObject({ body: { a: 1, b: [2] } });
    expect(replayed(await post(key, '{ "b":[2], "a":1.0 }'))).toEqual([201, 'true']);
    expect(replayed(await post(key, Buffer.concat([bom, Buffer.from('{"b":[2],"a":1}')])))).toEqual([201, 'true']);
    expect((await post(key, Buffer.concat([bom, Buffer.from('{"a":2,"b":[2]}')]))).status).toBe(422);
    const before = runs;
    const dup = await post(randomUUID(), Buffer.concat([bom, Buffer.from('{"a":1,"a":2}')]));
    expect(dup.status).toBe(400);
    expect(problemType(dup)).toContain('json-member-repeated');
    expect(runs).toBe(before);
  });

  it('Content-Type with a charset or in other casing parses and fingerprints the same body the same way', async () => {
    const key = randomUUID();
    expect((await post(key, '{"a":1}', { 'content-type': 'application/json' })).status).toBe(201);
    for (const type of ['application/json; charset=utf-8', 'application/json;charset=UTF-8', 'Application/JSON']) {
      expect([type, ...replayed(await post(key, '{"a":1}', { 'content-type': type }))]).toEqual([type, 201, 'true']);
    }
  });

  it('an empty, blank, too long, spaced or non-ASCII Idempotency-Key is a 400 problem document; the handler never runs', async () => {
    const before = runs;
    const cases: Array<[string, string]> = [
      ['', 'idempotency-key-missing'],
      ['   ', 'idempotency-key-missing'],
      ['""', 'idempotency-key-missing'],
      ['k'.repeat(256), 'idempotency-key-invalid'],
      ['a b', 'idempotency-key-invalid'],
      ['"a b"', 'idempotency-key-invalid'],
      ['"unterminated', 'idempotency-key-invalid'],
      ['caf\u00e9', 'idempotency-key-invalid'], // sent as the Latin-1 byte 0xE9
      ['tab\there', 'idempotency-key-invalid'],
    ];
    for (const [key, type] of cases) {
      const r = await post(key, '{"a":1}');
      expect([key, r.status, r.headers['content-type']]).toEqual([key, 400, 'application/problem+json']);
      expect(problemType(r)).toContain(type);
    }
    expect(runs).toBe(before);
    const longest = 'k'.repeat(255);
    expect((await post(longest, '{"a":1}')).status).toBe(201);
    expect(replayed(await post(longest, '{"a":1}'))).toEqual([201, 'true']);
  });

  it('the Idempotency-Key header name in any casing is the same header; sent twice in different casings it is refused', async () => {
    const key = randomUUID();
    expect((await raw(app.url, '/items', { ...JSON_TYPE, 'IDEMPOTENCY-KEY': key }, '{"a":1}')).status).toBe(201);
    expect(replayed(await raw(app.url, '/items', { ...JSON_TYPE, 'Idempotency-Key': key }, '{"a":1}'))).toEqual([201, 'true']);
    expect(replayed(await raw(app.url, '/items', { ...JSON_TYPE, 'idempotency-key': `"${key}"` }, '{"a":1}'))).toEqual([201, 'true']);
    const before = runs;
    for (const lines of [[key, key.toUpperCase()], [key, ''], ['', ''], [key, key, key], `${key}, ${key}`, `${key},other`]) {
      const r = await post(lines, '{"a":1}');
      expect([lines, r.status]).toEqual([lines, 400]);
      expect(JSON.parse(r.text)).toMatchObject({ detail: 'Send exactly one Idempotency-Key header.' });
    }
    expect(runs).toBe(before);
  });

  it('the same key on another path, another query or another method is a different request (422)', async () => {
    const key = randomUUID();
    expect((await post(key, '{"a":1}', JSON_TYPE, '/items/1')).status).toBe(201);
    expect((await post(key, '{"a":1}', JSON_TYPE, '/items/2')).status).toBe(422);
    expect((await post(key, '{"a":1}', JSON_TYPE, '/items/1?x=1')).status).toBe(422);
    expect((await post(key, '{"a":1}', JSON_TYPE, '/items')).status).toBe(422);
    expect(replayed(await post(key, '{"a":1}', JSON_TYPE, '/items/1'))).toEqual([201, 'true']);
    const other = await idempotency.handle({ method: 'PUT', route: '/items/:id', path: '/items/1', scope: 'public', idempotencyKey: key, body: Buffer.from('{"a":1}') }, () =>
      Promise.resolve({ status: 200 }),
    );
    expect(other.response.status).toBe(422);
    const lower = await idempotency.handle({ method: 'post', route: '/items/:id', path: '/items/1', scope: 'public', idempotencyKey: key, body: Buffer.from('{"a":1}') }, () =>
      Promise.resolve({ status: 200 }),
    );
    expect(lower.outcome).toBe('replayed');
  });

  describe('Retry-After of a key whose holder is gone', () => {
    const table = (): ReturnType<typeof sql.id> => sql.id(ts.schema, 'idempotency_keys');
    /** Claims `key` for the body the test posts, as a crashed server would have left it, then sets its lease end. */
    const crashed = async (key: string, leaseEnd: string): Promise<void> => {
      const claimed = await idempotency.claim({ scope: 'public', key, method: 'POST', route: '/items', fingerprint: fingerprintOf('{"a":1}') });
      expect(claimed.kind).toBe('claimed');
      await sql`UPDATE ${table()} SET locked_until = now() + ${leaseEnd}::interval WHERE key = ${key}`.execute(ts.db);
    };
    let fingerprintOf: (body: string) => string;
    beforeAll(async () => {
      const { requestFingerprint } = await import('../src');
      fingerprintOf = (body) => requestFingerprint('POST', '/items', Buffer.from(body));
    });

    it('is 1 when less than a second is left on the lease (rounded up, never 0)', async () => {
      const key = randomUUID();
      await crashed(key, '300 milliseconds');
      const r = await post(key, '{"a":1}');
      // Either still inside the lease (409, 1 s) or, on a slow machine, already past it (taken over).
      if (r.status === 409) expect(r.headers['retry-after']).toBe('1');
      else expect(r.status).toBe(201);
    });

    it('is the seconds left, rounded up, for a lease of 12.3 s', async () => {
      const key = randomUUID();
      await crashed(key, '12.3 seconds');
      const r = await post(key, '{"a":1}');
      expect(r.status).toBe(409);
      const seconds = Number(r.headers['retry-after']);
      expect(Number.isInteger(seconds)).toBe(true);
      expect(seconds).toBeGreaterThanOrEqual(1);
      expect(seconds).toBeLessThanOrEqual(13);
      expect(seconds).toBeGreaterThan(2); // not the default 1: the lease is what it waits for
    });

    it('an expired lease is taken over at once: the retry runs (201), no 409', async () => {
      const key = randomUUID();
      await crashed(key, '-1 second');
      const before = runs;
      const r = await post(key, '{"a":1}');
      expect(r.status).toBe(201);
      expect(runs).toBe(before + 1);
      expect((await post(key, '{"a":2}')).status).toBe(422);
    });
  });
});
