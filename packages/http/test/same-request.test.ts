import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { createIdempotency, type Idempotency } from '../src';
import { startApp, type AdapterName, type RunningApp, type TestHandler } from './adapters';
import { send, type ClientResponse } from './helpers';

/** POSTs raw bytes (not re-encoded by fetch) with the given header lines; a header given as an array is sent once per value. */
function post(baseUrl: string, path: string, headers: Record<string, string | string[]>, body?: Buffer): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const req = request(baseUrl + path, { method: 'POST' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        const out: Record<string, string> = {};
        for (const [name, value] of Object.entries(res.headers)) if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value;
        resolve({ status: res.statusCode ?? 0, headers: out, body: bytes, text: bytes.toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    for (const [name, value] of Object.entries(headers)) req.setHeader(name, value);
    req.setHeader('content-length', String(body?.length ?? 0));
    req.end(body);
  });
}

describe.each<AdapterName>(['express', 'fastify'])('what counts as the same request, over %s', (adapter) => {
  const { databaseUrl } = testServices();
  let ts: TestSchema;
  let idempotency: Idempotency;
  let app: RunningApp;
  let runs = 0;
  const handler: TestHandler = async () => {
    runs++;
    return { status: 201, json: { run: runs } };
  };
  const json = (key: string, text: string): Promise<ClientResponse> => send(app.url, '/items', { key, body: text });

  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, `http_same_${adapter}`, { max: 6 });
    idempotency = createIdempotency({ db: ts.db, schema: ts.schema });
    app = await startApp(adapter, idempotency, handler);
  });
  afterAll(async () => {
    await app?.close();
    await ts?.drop();
  });

  it('two integers that round to the same double are different requests (422)', async () => {
    const key = randomUUID();
    expect((await json(key, '{"orderId":1234567890123456789}')).status).toBe(201);
    const second = await json(key, '{"orderId":1234567890123456800}');
    expect(second.status).toBe(422);
    expect(JSON.parse(second.text)).toMatchObject({ status: 422, type: expect.stringContaining('idempotency-key-reused') });
    expect((await json(key, '{ "orderId" : 1234567890123456789 }')).headers['idempotent-replayed']).toBe('true');
  });

  it('decimals, exponents and long fractions are compared by exact value', async () => {
    const k1 = randomUUID();
    expect((await json(k1, '{"amount":0.1}')).status).toBe(201);
    expect((await json(k1, '{"amount":0.10000000000000001}')).status).toBe(422); // the same double, another value
    expect((await json(k1, '{"amount":1e400}')).status).toBe(422);
    const k2 = randomUUID();
    expect((await json(k2, '[1e400, 12345678901234567890.5]')).status).toBe(201);
    expect((await json(k2, '[1e401, 12345678901234567890.5]')).status).toBe(422);
    expect((await json(k2, '[10e399, 12345678901234567890.50]')).headers['idempotent-replayed']).toBe('true');
  });

  it('the same value written differently is the same request: 1, 1.0, 1e0, 10E-1; -0 and 0; escapes; member order and whitespace', async () => {
    const key = randomUUID();
    expect((await json(key, '{"n":1,"z":0,"s":"é","list":[1,2]}')).status).toBe(201);
    for (const same of ['{"n":1.0,"z":-0,"s":"\\u00e9","list":[1,2]}', '{ "list":[1e0, 2.00], "s":"é", "z":0.0e5, "n":10E-1 }']) {
      const r = await json(key, same);
      expect([r.status, r.headers['idempotent-replayed']]).toEqual([201, 'true']);
    }
    expect((await json(key, '{"n":1,"z":0,"s":"é","list":[2,1]}')).status).toBe(422);
  });

  it('a repeated member is refused with 400 before the key is claimed, whatever its values', async () => {
    const before = runs;
    const key = randomUUID();
    for (const body of ['{"amount":1,"amount":2}', '{"amount":1,"amount":1}', '{"a":{"b":1,"\\u0062":2}}']) {
      const r = await json(key, body);
      expect(r.status).toBe(400);
      expect(r.headers['content-type']).toBe('application/problem+json');
      expect(JSON.parse(r.text)).toMatchObject({ status: 400, type: expect.stringContaining('json-member-repeated') });
    }
    expect(runs).toBe(before);
    expect((await json(key, '{"amount":2}')).status).toBe(201); // the key was never taken
  });

  it('no body and {} are different requests', async () => {
    const key = randomUUID();
    expect((await post(app.url, '/items', { 'idempotency-key': key })).status).toBe(201);
    expect((await post(app.url, '/items', { 'idempotency-key': key })).headers['idempotent-replayed']).toBe('true');
    expect((await json(key, '{}')).status).toBe(422);
  });

  it('bytes that are not UTF-8 are compared as bytes, not after replacement', async () => {
    const key = randomUUID();
    const body = (b: number): Buffer => Buffer.concat([Buffer.from('{"note":"'), Buffer.from([b]), Buffer.from('"}')]);
    expect((await post(app.url, '/items', { 'idempotency-key': key, 'content-type': 'application/json' }, body(0xff))).status).toBe(201);
    expect((await post(app.url, '/items', { 'idempotency-key': key, 'content-type': 'application/json' }, body(0xfe))).status).toBe(422);
  });

  it('an Idempotency-Key header sent twice gets the "send exactly one" problem document', async () => {
    const before = runs;
    for (const lines of [['k1', 'k2'], ['same', 'same']]) {
      const r = await post(app.url, '/items', { 'idempotency-key': lines, 'content-type': 'application/json' }, Buffer.from('{"n":1}'));
      expect(r.status).toBe(400);
      expect(JSON.parse(r.text)).toMatchObject({ status: 400, type: expect.stringContaining('idempotency-key-invalid'), detail: 'Send exactly one Idempotency-Key header.' });
    }
    expect(runs).toBe(before);
  });
});
