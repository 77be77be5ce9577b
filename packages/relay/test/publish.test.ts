import { randomBytes } from 'node:crypto';
import { createOutbox, InvalidConfigError, InvalidIdentifierError, nodeVersionAtLeast, PLATFORMATIC_KAFKA, runWithTraceContext, type OutboxMessage } from '@effectively/core';
import { createTestSchema, readTopic, testClient, testKafka, testServices, type ReadMessage, type TestSchema } from '@effectively/testkit';
import { Partitioners } from 'kafkajs';
import { sql } from 'kysely';
import { OutboxRelay, pruneOutbox, type DrainResult, type OutboxRelayOptions } from '../src';
import { countByStatus, dedupe, eventIdsOf, header, idsPerKey, newTopic, outboxCount, outboxIds, outOfOrderKeys, testProducer, waitFor } from './support/outbox';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe(`outbox writer and relay: what commits is published, what rolls back is not (${testClient()})`, () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  const relays: OutboxRelay[] = [];
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_pub');
    await sql`CREATE TABLE ${sql.id(s.schema, 'effects')} (id text PRIMARY KEY, amount integer NOT NULL)`.execute(s.db);
  });
  afterAll(async () => {
    await Promise.allSettled(relays.map((r) => r.stop()));
    await s.drop();
  });

  const relay = (extra: Partial<OutboxRelayOptions> = {}): OutboxRelay => {
    const r = new OutboxRelay({ client: testClient(), brokers, db: s.db, databaseUrl, schema: s.schema, pollIntervalMs: 50, ...extra });
    relays.push(r);
    return r;
  };

  it('rejects unsafe writer and relay configuration up front, before touching the database', async () => {
    // Writer.
    expect(() => createOutbox({ schema: 'x"; DROP TABLE y; --' })).toThrow(InvalidIdentifierError);
    expect(() => createOutbox({ schema: s.schema, notify: 'yes' as never })).toThrow(InvalidConfigError);
    const writer = createOutbox({ schema: s.schema });
    const ok: OutboxMessage = { topic: 'fine', key: 'k', value: 'v' };
    const refused: Array<[OutboxMessage, RegExp]> = [
      [{ topic: 'bad topic!', value: 'v' }, /not a valid Kafka topic/],
      [{ topic: '..', value: 'v' }, /not a valid Kafka topic/],
      [{ topic: 'x'.repeat(250), value: 'v' }, /not a valid Kafka topic/],
      [{ topic: 'fine', value: 'v', headers: { 'event-id': 'mine' } }, /event-id/],
      [{ topic: 'fine', value: 'v', headers: { n: 1 as never } }, /must be a string/],
      [{ topic: 'fine', value: undefined as never }, /value is missing/],
      [{ topic: 'fine', value: 'v', eventId: '' }, /eventId/],
      [{ topic: 'fine', value: 'v', eventId: 'a\u0000b' }, /eventId/],
      [{ topic: 'fine', key: 'k'.repeat(1025), value: 'v' }, /at most 1024 bytes/],
    ];
    for (const [bad, message] of refused) {
      // The valid message first: had it been written before the bad one was checked, it would be in the table.
      await expect(s.db.transaction().execute((trx) => writer.publish(trx, [ok, bad]))).rejects.toThrow(InvalidConfigError);
      await expect(s.db.transaction().execute((trx) => writer.publish(trx, [ok, bad]))).rejects.toThrow(message);
    }
    expect(await outboxCount(s.db, s.schema)).toBe(0);

    // Relay (F22: kafkajs keeps no order with an idempotent producer and several requests in flight).
    const options = (extra: Partial<OutboxRelayOptions>): OutboxRelayOptions => ({ brokers, db: s.db, databaseUrl, schema: s.schema, ...extra });
    expect(() => new OutboxRelay(options({ producer: { maxInFlightRequests: 2 } }))).toThrow(InvalidConfigError);
    expect(() => new OutboxRelay(options({ producer: { maxInFlightRequests: 2 } }))).toThrow(/maxInFlightRequests must be 1/);
    expect(() => new OutboxRelay(options({ producer: { idempotent: false } }))).toThrow(/idempotent cannot be false/);
    expect(() => new OutboxRelay(options({ producer: { transactionalId: 'x' } as never }))).toThrow(InvalidConfigError);
    expect(() => new OutboxRelay(options({ schema: 'x"; DROP TABLE y; --' }))).toThrow(InvalidIdentifierError);
    expect(() => new OutboxRelay(options({ databaseUrl: undefined }))).toThrow(InvalidConfigError);
    expect(() => new OutboxRelay(options({ databaseUrl: undefined, listen: true }))).toThrow(/databaseUrl is required/);
    expect(() => new OutboxRelay(options({ databaseUrl: undefined, listen: false }))).not.toThrow();
    expect(() => new OutboxRelay(options({ batchSize: 0 }))).toThrow(/batchSize/);
    expect(() => new OutboxRelay(options({ leaseMs: 100 }))).toThrow(/leaseMs/);
    expect(() => new OutboxRelay(options({ brokers: [] }))).toThrow(/brokers/);
    // A send must end well before the lanes' lease runs out.
    expect(() => new OutboxRelay(options({ leaseMs: 2_000, sendTimeoutMs: 2_000 }))).toThrow(/sendTimeoutMs must be at least 100 and below leaseMs/);
    expect(() => new OutboxRelay(options({ sendTimeoutMs: 50 }))).toThrow(/sendTimeoutMs/);
    expect(() => new OutboxRelay(options({ parallelClaims: 0 }))).toThrow(/parallelClaims/);
    expect(() => new OutboxRelay(options({ parallelClaims: 17 }))).toThrow(/parallelClaims/);
    // The client, and settings only the other client reads (checked here, loaded on connection).
    expect(() => new OutboxRelay(options({ client: 'rdkafka' as never }))).toThrow(/client must be "kafkajs", "platformatic" or a function/);
    expect(() => new OutboxRelay(options({ client: 'platformatic', producer: { retry: { retries: 2 } } }))).toThrow(/producer \(settings of the kafkajs client\) is set but client is "platformatic"/);
    expect(() => new OutboxRelay(options({ client: 'platformatic', kafka: { connectionTimeout: 500 } }))).toThrow(/kafka \(settings of the kafkajs client\)/);
    expect(() => new OutboxRelay(options({ platformatic: { retries: 3 } }))).toThrow(/client is "kafkajs"/);
    expect(() => new OutboxRelay(options({ client: 'platformatic', platformatic: { retries: 1 } }))).toThrow(/platformatic.retries must be an integer of at least 2/);
    expect(() => new OutboxRelay(options({ client: 'kafkajs', producerClient: () => ({}) as never }))).toThrow(/pass only client/);
    // On a Node.js older than 22.22 the platformatic client is refused up front, not taken for Kafka being down.
    const platformatic = (): OutboxRelay => new OutboxRelay(options({ client: 'platformatic', platformatic: { retries: 3, tls: {} } }));
    if (nodeVersionAtLeast(PLATFORMATIC_KAFKA.minNode ?? '0')) expect(platformatic).not.toThrow();
    else expect(platformatic).toThrow(/client: 'platformatic' needs Node\.js ≥ 22\.22\.0 .*npm install @platformatic\/kafka/);
    // The caller's options object is not changed.
    const given = options({ producer: { retry: { retries: 2 } } });
    const before = JSON.stringify({ ...given, db: undefined });
    new OutboxRelay(given);
    expect(JSON.stringify({ ...given, db: undefined })).toBe(before);
  });

  it('concurrent transactions: rolled-back ones emit nothing, committed ones reach Kafka once each (distinct event ids == rows), in order per key, and the outbox empties', async () => {
    const topic = await newTopic(kafka, 'relay_atomic', 3);
    const effects = sql.id(s.schema, 'effects');
    const writer = createOutbox({ schema: s.schema });
    const r = relay({ batchSize: 20 });
    await r.start();

    const committed = new Map<string, string>(); // event id -> outbox id
    const rolledBack = new Set<string>();
    const committedEffects: string[] = [];
    const keys = ['alpha', 'beta', 'gamma', 'delta', null];
    // 5 writers x 8 transactions x 5 rows; every third transaction fails after publishing:
    // by throwing, or by a database error (duplicate effect id).
    await Promise.all(
      Array.from({ length: 5 }, async (_, w) => {
        for (let t = 0; t < 8; t++) {
          const fails = (w + t) % 3 === 0 ? (t % 2 === 0 ? 'throw' : 'db-error') : undefined;
          const effectId = `w${w}-t${t}`;
          let written: string[] = [];
          const run = s.db.transaction().execute(async (trx) => {
            await sql`INSERT INTO ${effects} (id, amount) VALUES (${effectId}, ${t})`.execute(trx);
            const messages = Array.from({ length: 5 }, (_, i): OutboxMessage => ({ topic, key: keys[(w + t + i) % keys.length], value: { w, t, i } }));
            const result = await writer.publish(trx, messages);
            written = result.eventIds;
            expect(result.inserted).toBe(5);
            const ids = await outboxIds(trx, s.schema, result.eventIds);
            if (fails === 'throw') throw new Error('handler failed after publishing');
            if (fails === 'db-error') await sql`INSERT INTO ${effects} (id, amount) VALUES (${effectId}, 0)`.execute(trx);
            return ids;
          });
          if (fails === undefined) {
            for (const [eventId, id] of await run) committed.set(eventId, id);
            committedEffects.push(effectId);
          } else {
            await expect(run).rejects.toThrow(fails === 'throw' ? /handler failed/ : /duplicate key/);
            expect(written).toHaveLength(5);
            for (const eventId of written) rolledBack.add(eventId);
          }
        }
      }),
    );
    expect(rolledBack.size).toBeGreaterThan(0);
    expect(committed.size).toBe(committedEffects.length * 5);

    // Every committed row is published and deleted; a row of a rolled-back transaction would be
    // in the table (and so published) had publish not used the caller's transaction.
    await waitFor(() => outboxCount(s.db, s.schema), (n) => n === 0, 30_000, 'outbox empty');
    await r.stop();
    const { rows: applied } = await sql<{ id: string }>`SELECT id FROM ${effects} ORDER BY id`.execute(s.db);
    expect(applied.map((x) => x.id)).toEqual([...committedEffects].sort());

    const messages = await readTopic(kafka, topic);
    const ids = eventIdsOf(messages);
    expect(ids.filter((id) => id !== undefined && rolledBack.has(id))).toEqual([]);
    const applies = dedupe(messages); // a downstream consumer deduplicating by event-id
    expect(new Set(applies.map((m) => header(m, 'event-id')))).toEqual(new Set(committed.keys()));
    expect(applies).toHaveLength(committed.size);
    expect(messages).toHaveLength(committed.size); // and no duplicates at all in normal operation
    expect(ids.every((id) => id !== undefined && UUID_V7.test(id))).toBe(true);
    const perKey = idsPerKey(messages, committed);
    expect([...perKey.keys()].sort()).toEqual(['<null>', 'alpha', 'beta', 'delta', 'gamma']);
    expect(outOfOrderKeys(perKey)).toEqual([]);
    expect(r.stats.published).toBe(committed.size);
  });

  it('sends values, keys, headers and trace context as written; one row per explicit event id; deletes acknowledged rows', async () => {
    const topic = await newTopic(kafka, 'relay_values');
    const writer = createOutbox({ schema: s.schema });
    const bytes = Buffer.concat([Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a, 0x0d]), randomBytes(250)]);
    const backing = Buffer.from('xxHELLOyy');
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 2, 5); // a view into a larger buffer
    const binaryKey = new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x00]);
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const otherTrace = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00';

    const first = await s.db.transaction().execute((trx) =>
      writer.publish(trx, [
        { eventId: 'json', topic, key: 'k-json', value: { a: 1, nested: { b: [1, 2] }, s: 'é' }, headers: { 'x-tenant': 't1' } },
        { eventId: 'json-number', topic, key: 'k-json', value: 42 },
        { eventId: 'json-false', topic, key: 'k-json', value: false },
        { eventId: 'json-own-type', topic, key: 'k-json', value: { x: 1 }, headers: { 'content-type': 'application/vnd.x+json' } },
        { eventId: 'bytes', topic, key: 'k-bytes', value: bytes },
        { eventId: 'view', topic, key: 'k-bytes', value: view },
        { eventId: 'string', topic, key: 'k-string', value: 'héllo wörld' },
        { eventId: 'empty', topic, key: 'k-string', value: '' },
        { eventId: 'tombstone', topic, key: 'k-tomb', value: null },
        { eventId: 'null-key', topic, key: null, value: 'no key' },
        { eventId: 'absent-key', topic, value: 'no key either' },
        { eventId: 'binary-key', topic, key: binaryKey, value: 'binary key' },
        { eventId: 'dup', topic, key: 'k-dup', value: 'first' },
        { topic, key: 'k-default', value: 'default id 1' },
        { topic, key: 'k-default', value: 'default id 2' },
      ]),
    );
    expect(first.inserted).toBe(15);
    expect(first.alreadyPublished).toEqual([]);
    const defaultIds = first.eventIds.slice(13);
    expect(defaultIds.every((id) => UUID_V7.test(id))).toBe(true);
    expect(defaultIds[0]).not.toBe(defaultIds[1]);

    // The same explicit event id again (and a new one beside it): kept once, reported.
    const again = await s.db.transaction().execute((trx) =>
      writer.publish(trx, [
        { eventId: 'dup', topic, key: 'k-dup', value: 'second' },
        { eventId: 'after-dup', topic, key: 'k-dup', value: 'after' },
      ]),
    );
    expect(again).toEqual({ eventIds: ['dup', 'after-dup'], inserted: 1, alreadyPublished: ['dup'] });
    // The same id twice in one call: one row, the second copy reported.
    const twice = await s.db.transaction().execute((trx) =>
      writer.publish(trx, [
        { eventId: 'twice', topic, key: 'k-twice', value: 'one' },
        { eventId: 'twice', topic, key: 'k-twice', value: 'two' },
      ]),
    );
    expect(twice).toEqual({ eventIds: ['twice', 'twice'], inserted: 1, alreadyPublished: ['twice'] });

    // Trace context: from runWithTraceContext, from an explicit header (wins), from a custom provider; none outside.
    await runWithTraceContext({ traceparent, tracestate: 'vendor=abc' }, () =>
      s.db.transaction().execute((trx) =>
        writer.publish(trx, [
          { eventId: 'traced', topic, key: 'k-trace', value: 't' },
          { eventId: 'traced-own', topic, key: 'k-trace', value: 't', headers: { traceparent: otherTrace } },
        ]),
      ),
    );
    await runWithTraceContext({ traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' }, () =>
      s.db.transaction().execute((trx) => writer.publish(trx, { eventId: 'traced-invalid', topic, key: 'k-trace', value: 't' })),
    );
    const provided = createOutbox({ schema: s.schema, traceContext: () => ({ traceparent: otherTrace }) });
    await s.db.transaction().execute((trx) => provided.publish(trx, { eventId: 'traced-provider', topic, key: 'k-trace', value: 't' }));
    const total = 15 + 1 + 1 + 4;
    expect(await outboxCount(s.db, s.schema)).toBe(total);

    const r = relay({ listen: false, databaseUrl: undefined });
    expect(await r.drainOnce()).toEqual<DrainResult>({ published: total, failed: 0, parked: 0, fetched: total, lanes: 64 });
    expect(await outboxCount(s.db, s.schema)).toBe(0); // acknowledged rows are deleted in the claim
    expect(await r.drainOnce()).toEqual<DrainResult>({ published: 0, failed: 0, parked: 0, fetched: 0, lanes: 64 });
    expect(r.stats.published).toBe(total);

    const messages = await readTopic(kafka, topic);
    expect(messages).toHaveLength(total);
    const byId = new Map<string, ReadMessage>(messages.map((m) => [header(m, 'event-id') as string, m]));
    expect(byId.size).toBe(total);
    const m = (id: string): ReadMessage => {
      const found = byId.get(id);
      if (found === undefined) throw new Error(`no message with event id ${id}`);
      return found;
    };
    expect(JSON.parse(String(m('json').value))).toEqual({ a: 1, nested: { b: [1, 2] }, s: 'é' });
    expect(header(m('json'), 'content-type')).toBe('application/json');
    expect(header(m('json'), 'x-tenant')).toBe('t1');
    expect(m('json').key?.toString()).toBe('k-json');
    expect(m('json-number').value?.toString()).toBe('42');
    expect(header(m('json-number'), 'content-type')).toBe('application/json');
    expect(m('json-false').value?.toString()).toBe('false');
    expect(header(m('json-own-type'), 'content-type')).toBe('application/vnd.x+json');
    expect(Buffer.compare(m('bytes').value as Buffer, bytes)).toBe(0);
    expect(header(m('bytes'), 'content-type')).toBeUndefined();
    expect(m('view').value?.toString()).toBe('HELLO');
    expect(m('string').value?.toString('utf8')).toBe('héllo wörld');
    expect(header(m('string'), 'content-type')).toBeUndefined();
    expect(m('empty').value).not.toBeNull(); // an empty string is not a tombstone
    expect(m('empty').value?.length).toBe(0);
    expect(m('tombstone').value).toBeNull();
    expect(m('tombstone').key?.toString()).toBe('k-tomb');
    expect(m('null-key').key).toBeNull();
    expect(m('absent-key').key).toBeNull();
    expect(Buffer.compare(m('binary-key').key as Buffer, Buffer.from(binaryKey))).toBe(0);
    expect(messages.filter((x) => header(x, 'event-id') === 'dup')).toHaveLength(1);
    expect(m('dup').value?.toString()).toBe('first');
    expect(m('twice').value?.toString()).toBe('one');
    expect(m(defaultIds[0] as string).value?.toString()).toBe('default id 1');
    expect(header(m('traced'), 'traceparent')).toBe(traceparent);
    expect(header(m('traced'), 'tracestate')).toBe('vendor=abc');
    expect(header(m('traced-own'), 'traceparent')).toBe(otherTrace);
    expect(header(m('traced-invalid'), 'traceparent')).toBeUndefined();
    expect(header(m('traced-provider'), 'traceparent')).toBe(otherTrace);
    expect(header(m('json'), 'traceparent')).toBeUndefined();
    // Within a key, topic order is the order written.
    const order = messages.filter((x) => x.key?.toString() === 'k-json').map((x) => header(x, 'event-id'));
    expect(order).toEqual(['json', 'json-number', 'json-false', 'json-own-type']);

    await r.stop();
    await expect(r.drainOnce()).rejects.toThrow(/stopped/);
  });

  it('puts a key on the partition the Java client and kafkajs pick (murmur2, positive, modulo the partition count)', async () => {
    const topic = await newTopic(kafka, 'relay_partitions', 7); // not a power of two: a sign-handling difference would show
    const keys = Array.from({ length: 200 }, (_, i) => `key-${i}-${randomBytes(4).toString('hex')}`);
    await createOutbox({ schema: s.schema }).publish(s.db, keys.map((key) => ({ topic, key, value: key })));
    const r = relay({ listen: false, databaseUrl: undefined, batchSize: 500 });
    await r.drainOnce();
    await r.stop();
    const javaPartition = Partitioners.DefaultPartitioner();
    const partitionMetadata = Array.from({ length: 7 }, (_, partitionId) => ({ partitionId, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] }));
    const messages = await readTopic(kafka, topic);
    expect(messages).toHaveLength(keys.length);
    for (const m of messages) expect([String(m.key), m.partition]).toEqual([String(m.key), javaPartition({ topic, partitionMetadata, message: { key: m.key, value: null } })]);
  });

  it('caps a claim by bytes, so rows that together exceed the broker batch limit still go out in whole batches, in order', async () => {
    const topic = await newTopic(kafka, 'relay_bytes', 1);
    const writer = createOutbox({ schema: s.schema });
    // 600 rows of 4 KB on one partition: 2.4 MB, over the broker's 1 MB record-batch limit in one request.
    const payload = 'x'.repeat(4_096);
    await s.db.transaction().execute((trx) => writer.publish(trx, Array.from({ length: 600 }, (_, i) => ({ eventId: `big-${i}`, topic, key: 'one-key', value: `${i}:${payload}` }))));
    const sends: number[] = [];
    const r = relay({
      listen: false,
      databaseUrl: undefined,
      batchSize: 600,
      client: (settings) => {
        const inner = testProducer(settings);
        return { ...inner, sendBatch: async (batches) => { sends.push(batches.reduce((n, b) => n + b.messages.length, 0)); await inner.sendBatch(batches); } };
      },
    });
    let published = 0;
    for (let i = 0; i < 10 && published < 600; i++) published += (await r.drainOnce()).published;
    expect(published).toBe(600);
    expect(r.stats.failedAttempts).toBe(0);
    // Whole batches of about 900 KB (no failed batch falling back to one request per row).
    expect(sends.length).toBeLessThanOrEqual(4);
    expect(sends.every((n) => n > 100)).toBe(true);
    const order = (await readTopic(kafka, topic)).map((m) => String(m.value).split(':')[0]);
    expect(order).toEqual(Array.from({ length: 600 }, (_, i) => String(i)));
    await r.stop();
  });
});

describe('pruneOutbox', () => {
  const { databaseUrl } = testServices();
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_prune');
  });
  afterAll(async () => s.drop());

  it('deletes only rows marked published older than the window, in batches; never pending or parked rows', async () => {
    const outbox = sql.id(s.schema, 'outbox');
    const insert = (prefix: string, n: number, status: string, publishedAgo: string | null) =>
      sql`
        INSERT INTO ${outbox} (event_id, topic, status, created_at, published_at)
        SELECT ${prefix} || '-' || g, 't', ${status}, now() - interval '3 days',
               CASE WHEN ${publishedAgo}::interval IS NULL THEN NULL ELSE now() - ${publishedAgo}::interval END
        FROM generate_series(1, ${n}) g`.execute(s.db);
    await insert('old-published', 25, 'published', '2 hours');
    await insert('new-published', 5, 'published', '1 minute');
    await insert('old-pending', 4, 'pending', null);
    await insert('old-parked', 3, 'parked', null);
    await expect(pruneOutbox(s.db, { schema: s.schema, olderThanMs: -1 })).rejects.toThrow(InvalidConfigError);
    expect(await pruneOutbox(s.db, { schema: s.schema, olderThanMs: 60 * 60 * 1000, batchSize: 4 })).toEqual({ deleted: 25 });
    expect(await countByStatus(s.db, s.schema)).toEqual({ published: 5, pending: 4, parked: 3 });
    expect(await pruneOutbox(s.db, { schema: s.schema, olderThanMs: 60 * 60 * 1000 })).toEqual({ deleted: 0 });
  });
});
