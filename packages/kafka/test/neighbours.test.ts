import { createOutbox, InvalidIdentifierError, migrate, SchemaNewerThanLibraryError } from '@effectively/core';
import { MIGRATION_TABLE } from '@effectively/migrations';
import { createTestSchema, createTopics, produceMessages, testClient, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import type { Admin } from 'kafkajs';
import { sql } from 'kysely';
import { IdempotentConsumer, REDRIVE_HEADER, type ConsumerStats, type IdempotentConsumerOptions } from '../src';
import { apply, createLedger, totals, waitFor, type Entry } from './support/ledger';

/**
 * Neighbours of the inputs of issue 10 (items 3, 4, 5, 7): ids that spell a derived key with
 * small differences, partitions of one topic in different states, re-drive headers where no
 * re-drive is due, and schemas this version cannot use.
 */
describe('neighbours of issue 10', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  let admin: Admin;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'nbr');
    await createLedger(s.db, s.schema);
    admin = kafka.admin();
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.disconnect();
    await s?.drop();
  });

  const settled = (stats: ConsumerStats): number => stats.processed + stats.duplicates + stats.deadLettered + stats.deadLetteredDuplicates;
  const value = (account: string): string => JSON.stringify({ account, amount: 1 });
  const consumer = (topic: string, group: string, extra: Partial<IdempotentConsumerOptions<Entry>> = {}): IdempotentConsumer<Entry> =>
    new IdempotentConsumer<Entry>({ client: testClient(), brokers, groupId: group, topics: [topic], db: s.db, schema: s.schema, handler: async (event, { trx }) => apply(trx, s.schema, event.value), ...extra });
  const deadLetters = async (topic: string): Promise<Array<Record<string, string>>> => {
    const { rows } = await sql<{ headers: Record<string, string> }>`SELECT headers FROM ${sql.id(s.schema, 'outbox')} WHERE topic = ${`${topic}.dlq`} ORDER BY id`.execute(s.db);
    return rows.map((r) => r.headers);
  };

  describe('item 3: producer ids near the derived form are ordinary, distinct producer ids', () => {
    it('separators, case, whitespace, look-alikes, zero-width, NFC/NFD, the exact spelling, a repeated identical header, an id at the byte limit: each applied once; id-less records dead-lettered', async () => {
      const [t] = (await createTopics(kafka, [{ prefix: 'nbr_ids', partitions: 1 }])) as [string];
      // Offsets 0..13 carry ids; 14 and 15 carry none (their derived keys are invalid:T/0/14 and invalid:T/0/15).
      const ids = [
        `invalid:${t}/0/14`, // the exact derived key of offset 14
        `INVALID:${t}/0/14`,
        `invalid:${t}\\0\\14`,
        `invalid:${t}:0:14`,
        ` invalid:${t}/0/14`,
        `invalid:${t}/0/14 `,
        `invalid:${t}/0/14\t`,
        `invalid\u2236${t}/0/14`, // RATIO look-alike colon
        `invalid:${t}\uff0f0\uff0f14`, // fullwidth solidus
        `invalid:${t}/0/14\u200b`, // zero-width space
        `${t}/0/15`, // what coordinates mode would derive for offset 15
        'caf\u00e9', // NFC
        'cafe\u0301', // NFD: other bytes, another event
        '\u00e9'.repeat(127) + 'x', // 255 bytes: exactly the default limit
      ];
      await produceMessages(kafka, t, [
        ...ids.map((id, i) => ({ key: 'k', value: value(`id-${i}`), headers: { 'event-id': i === 12 ? [id, id] : id } })),
        { key: 'k', value: value('none-14') },
        { key: 'k', value: value('none-15') },
      ]);
      const c = consumer(t, uniqueName('g'));
      await c.start();
      try {
        await waitFor(async () => settled(c.stats), (n) => n >= ids.length + 2, 60_000);
        const totalsNow = await totals(s.db, s.schema);
        expect(ids.map((_, i) => totalsNow[`id-${i}`])).toEqual(ids.map(() => ({ total: 1, applied: 1 })));
        expect(c.stats).toMatchObject({ processed: ids.length, deadLettered: 2, duplicates: 0, conflicts: 0 });
        expect((await deadLetters(t)).map((h) => [h['dlq-original-offset'], h['dlq-reason'], h['dlq-event-id-origin']])).toEqual([
          [String(ids.length), 'invalid-event-id', 'derived'],
          [String(ids.length + 1), 'invalid-event-id', 'derived'],
        ]);
      } finally {
        await c.stop();
      }
    });

    it('one byte over the limit (multi-byte), an empty value repeated, a valid id repeated with an empty one: dead-lettered with the refused value kept', async () => {
      const [t] = (await createTopics(kafka, [{ prefix: 'nbr_refused', partitions: 1 }])) as [string];
      await produceMessages(kafka, t, [
        { key: 'k', value: value('over'), headers: { 'event-id': '\u00e9'.repeat(128) } },
        { key: 'k', value: value('empties'), headers: { 'event-id': ['', ''] } },
        { key: 'k', value: value('mixed'), headers: { 'event-id': ['ok-id', ''] } },
        { key: 'k', value: value('bad-second'), headers: { 'event-id': [Buffer.from('ok-id'), Buffer.from([0xff])] } },
      ]);
      const c = consumer(t, uniqueName('g'));
      await c.start();
      try {
        await waitFor(async () => settled(c.stats), (n) => n >= 4, 60_000);
        expect(c.stats).toMatchObject({ processed: 0, deadLettered: 4 });
        const dlq = await deadLetters(t);
        expect(dlq.map((h) => h['dlq-reason'])).toEqual(Array(4).fill('invalid-event-id'));
        expect(dlq.map((h) => h['dlq-refused-event-id'] !== undefined)).toEqual([true, true, true, true]);
      } finally {
        await c.stop();
      }
    });
  });

  it('item 3, dead-letter ids: outbox rows a producer published under the ids dead letters derive (pending from before, and from a handler of the same chunk) do not make the dead letters vanish', async () => {
    const [t] = (await createTopics(kafka, [{ prefix: 'nbr_dlq_ids', partitions: 1 }])) as [string];
    const group = uniqueName('g');
    const outbox = createOutbox({ schema: s.schema });
    // Pending before the consumer starts: the id the dead letter of offset 2 (no event id) derives.
    await outbox.publish(s.db, { topic: 'elsewhere', key: 'p', value: 'producer-row-1', eventId: `dlq:${group}:${t}/0/2:invalid-event-id` });
    await produceMessages(kafka, t, [
      { key: 'k', value: value('first'), headers: { 'event-id': 'first' } },
      { key: 'k', value: value('poison'), headers: { 'event-id': 'poison' } },
      { key: 'k', value: value('no-id') },
    ]);
    const c = consumer(t, group, {
      maxAttempts: 1,
      handler: async (event, { trx, outbox: out }) => {
        if (event.value.account === 'poison') throw new Error('poison');
        // The id the dead letter of offset 1 derives, chosen by this handler.
        await out.publish(trx, { topic: 'elsewhere', key: 'p', value: 'producer-row-2', eventId: `dlq:${group}:${t}/0/1:handler-failed` });
        await apply(trx, s.schema, event.value);
      },
    });
    await c.start();
    try {
      await waitFor(async () => settled(c.stats), (n) => n >= 3, 60_000);
      expect(c.stats).toMatchObject({ processed: 1, deadLettered: 2 });
      // (A dead letter that took another id is written after the chunk's other rows: sorted by offset here.)
      expect((await deadLetters(t)).map((h) => [h['dlq-original-offset'], h['dlq-reason']]).sort()).toEqual([
        ['1', 'handler-failed'],
        ['2', 'invalid-event-id'],
      ]);
      const { rows } = await sql<{ value: string }>`SELECT convert_from(payload, 'UTF8') AS value FROM ${sql.id(s.schema, 'outbox')} WHERE topic = 'elsewhere' ORDER BY id`.execute(s.db);
      expect(rows.map((r) => r.value)).toEqual(['producer-row-1', 'producer-row-2']);
    } finally {
      await c.stop();
    }
  });

  describe('item 4: offsets', () => {
    const transaction = async (topic: string, partition: number, accounts: string[], outcome: 'commit' | 'abort'): Promise<void> => {
      const producer = kafka.producer({ transactionalId: uniqueName('tx'), idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      try {
        const txn = await producer.transaction();
        await txn.send({ topic, messages: accounts.map((a) => ({ key: 'k', partition, value: value(a), headers: { 'event-id': a } })) });
        await (outcome === 'commit' ? txn.commit() : txn.abort());
      } finally {
        await producer.disconnect();
      }
    };
    const positions = async (group: string, topic: string): Promise<Array<[number, string, string]>> => {
      const committed = (await admin.fetchOffsets({ groupId: group, topics: [topic] }))[0]?.partitions ?? [];
      const ends = await admin.fetchTopicOffsets(topic);
      return ends.map((e) => [e.partition, committed.find((c) => c.partition === e.partition)?.offset ?? '-1', e.high] as [number, string, string]).sort((a, b) => a[0] - b[0]);
    };

    it('three partitions, only some ending in control records (aborted, committed, plain, empty): every committed offset reaches its high watermark', async () => {
      const [t] = (await createTopics(kafka, [{ prefix: 'nbr_mixed', partitions: 4 }])) as [string];
      const u = uniqueName('m');
      await transaction(t, 0, [`${u}-p0-a`], 'commit');
      await transaction(t, 0, [`${u}-p0-x`], 'abort');
      await transaction(t, 1, [`${u}-p1-a`, `${u}-p1-b`], 'commit');
      await produceMessages(kafka, t, [{ key: 'k', partition: 2, value: value(`${u}-p2-a`), headers: { 'event-id': `${u}-p2-a` } }]);
      const group = uniqueName('g');
      const c = consumer(t, group);
      await c.start();
      try {
        await waitFor(() => totals(s.db, s.schema), (x) => [`${u}-p0-a`, `${u}-p1-a`, `${u}-p1-b`, `${u}-p2-a`].every((a) => x[a]?.applied === 1), 60_000);
        const at = await waitFor(() => positions(group, t), (p) => p.every(([, committed, end]) => end === '0' || committed === end), 30_000);
        expect(at.filter(([, , end]) => end !== '0').map(([p, committed, end]) => [p, committed === end])).toEqual([
          [0, true],
          [1, true],
          [2, true],
        ]);
        expect((await totals(s.db, s.schema))[`${u}-p0-x`]).toBeUndefined();
      } finally {
        await c.stop();
      }
    });

    it('fromBeginning: true with a committed offset below the log start resumes at the log start, not at 0 and not at the end', async () => {
      const [t] = (await createTopics(kafka, [{ prefix: 'nbr_range_fb', partitions: 1 }])) as [string];
      const u = uniqueName('r');
      await produceMessages(kafka, t, Array.from({ length: 10 }, (_, i) => ({ key: 'k', value: value(`${u}-${i}`), headers: { 'event-id': `${u}-${i}` } })));
      const group = uniqueName('g');
      await admin.setOffsets({ groupId: group, topic: t, partitions: [{ partition: 0, offset: '3' }] });
      await admin.deleteTopicRecords({ topic: t, partitions: [{ partition: 0, offset: '6' }] });
      const c = consumer(t, group, { fromBeginning: true });
      await c.start();
      try {
        await waitFor(() => totals(s.db, s.schema), (x) => x[`${u}-9`]?.applied === 1, 30_000);
        await waitFor(() => positions(group, t), (p) => p[0]?.[1] === '10', 30_000);
        const x = await totals(s.db, s.schema);
        expect(Array.from({ length: 10 }, (_, i) => x[`${u}-${i}`]?.applied)).toEqual([undefined, undefined, undefined, undefined, undefined, undefined, 1, 1, 1, 1]);
      } finally {
        await c.stop();
      }
    });

    it('committed past the end of the log (the topic was re-created): later records are applied, not skipped', async () => {
      const [t] = (await createTopics(kafka, [{ prefix: 'nbr_past_end', partitions: 1 }])) as [string];
      const u = uniqueName('p');
      await produceMessages(kafka, t, [0, 1].map((i) => ({ key: 'k', value: value(`${u}-${i}`), headers: { 'event-id': `${u}-${i}` } })));
      const group = uniqueName('g');
      await admin.setOffsets({ groupId: group, topic: t, partitions: [{ partition: 0, offset: '50' }] });
      const c = consumer(t, group, { fromBeginning: false });
      await c.start();
      try {
        await produceMessages(kafka, t, [{ key: 'k', value: value(`${u}-2`), headers: { 'event-id': `${u}-2` } }]);
        await waitFor(() => totals(s.db, s.schema), (x) => x[`${u}-2`]?.applied === 1, 30_000);
        expect((await totals(s.db, s.schema))[`${u}-2`]).toEqual({ total: 1, applied: 1 });
      } finally {
        await c.stop();
      }
    });

    it('records deleted while the consumer is running (up to the end, then new records): the new records are applied once', async () => {
      const [t] = (await createTopics(kafka, [{ prefix: 'nbr_deleted_live', partitions: 1 }])) as [string];
      const u = uniqueName('d');
      const group = uniqueName('g');
      const c = consumer(t, group);
      await c.start();
      try {
        await produceMessages(kafka, t, Array.from({ length: 5 }, (_, i) => ({ key: 'k', value: value(`${u}-${i}`), headers: { 'event-id': `${u}-${i}` } })));
        await waitFor(() => totals(s.db, s.schema), (x) => x[`${u}-4`]?.applied === 1, 30_000);
        await waitFor(() => positions(group, t), (p) => p[0]?.[1] === '5', 30_000);
        await admin.deleteTopicRecords({ topic: t, partitions: [{ partition: 0, offset: '5' }] });
        await produceMessages(kafka, t, Array.from({ length: 3 }, (_, i) => ({ key: 'k', value: value(`${u}-${5 + i}`), headers: { 'event-id': `${u}-${5 + i}` } })));
        await waitFor(() => totals(s.db, s.schema), (x) => x[`${u}-7`]?.applied === 1, 30_000);
        const at = await waitFor(() => positions(group, t), (p) => p[0]?.[1] === '8', 30_000);
        expect(at[0]?.[1]).toBe('8');
        const x = await totals(s.db, s.schema);
        expect(Array.from({ length: 8 }, (_, i) => x[`${u}-${i}`])).toEqual(Array(8).fill({ total: 1, applied: 1 }));
      } finally {
        await c.stop();
      }
    });
  });

  describe('item 5: re-drive headers where no re-drive is due', () => {
    it('a re-drive header on an event never dead-lettered: applied once like any event; copies with the same or another re-drive id are duplicates', async () => {
      const [t] = (await createTopics(kafka, [{ prefix: 'nbr_redrive_plain', partitions: 1 }])) as [string];
      const u = uniqueName('rp');
      const c = consumer(t, uniqueName('g'));
      await c.start();
      try {
        await produceMessages(kafka, t, [
          { key: 'k', value: value(u), headers: { 'event-id': u, [REDRIVE_HEADER]: 'r1' } },
          { key: 'k', value: value(u), headers: { 'event-id': u, [REDRIVE_HEADER]: 'r1' } },
          { key: 'k', value: value(u), headers: { 'event-id': u, [REDRIVE_HEADER]: 'r2' } },
          { key: 'k', value: value(u), headers: { 'event-id': u } },
        ]);
        await waitFor(async () => settled(c.stats), (n) => n >= 4, 60_000);
        expect(c.stats).toMatchObject({ processed: 1, duplicates: 3, redriven: 0, deadLettered: 0, deadLetteredDuplicates: 0 });
        expect((await totals(s.db, s.schema))[u]).toEqual({ total: 1, applied: 1 });
      } finally {
        await c.stop();
      }
    });

    it('two different re-drive ids for one dead letter: the first applies it once, the second is a duplicate; an empty or repeated re-drive header is no re-drive', async () => {
      const [t] = (await createTopics(kafka, [{ prefix: 'nbr_redrive_two', partitions: 1 }])) as [string];
      const u = uniqueName('rt');
      let broken = true;
      const c = consumer(t, uniqueName('g'), {
        maxAttempts: 1,
        deadLetterTopic: () => `${t}.dlq`,
        handler: async (event, { trx }) => {
          if (broken) throw new Error('handler bug');
          await apply(trx, s.schema, event.value);
        },
      });
      await c.start();
      try {
        await produceMessages(kafka, t, [{ key: 'k', value: value(u), headers: { 'event-id': u } }]);
        await waitFor(async () => c.stats.deadLettered, (n) => n >= 1, 60_000);
        broken = false;
        // Not re-drives: an empty re-drive header.
        await produceMessages(kafka, t, [{ key: 'k', value: value(u), headers: { 'event-id': u, [REDRIVE_HEADER]: '' } }]);
        await waitFor(async () => c.stats.deadLetteredDuplicates, (n) => n >= 1, 60_000);
        expect((await totals(s.db, s.schema))[u]).toBeUndefined();
        await produceMessages(kafka, t, [
          { key: 'k', value: value(u), headers: { 'event-id': u, [REDRIVE_HEADER]: 'replay-a' } },
          { key: 'k', value: value(u), headers: { 'event-id': u, [REDRIVE_HEADER]: 'replay-b' } },
        ]);
        await waitFor(async () => settled(c.stats), (n) => n >= 4, 60_000);
        expect(c.stats).toMatchObject({ redriven: 1, deadLettered: 1, deadLetteredDuplicates: 1, duplicates: 1 });
        expect((await totals(s.db, s.schema))[u]).toEqual({ total: 1, applied: 1 });
      } finally {
        await c.stop();
      }
    });
  });

  describe('item 7: start() on a schema it cannot use', () => {
    let topic: string;
    beforeAll(async () => {
      [topic] = (await createTopics(kafka, [{ prefix: 'nbr_schema', partitions: 1 }])) as [string];
    });

    it.each(['Upper', 'has-dash', 'with space', 'x"y', '', 'pg_mine', 'select', 'a'.repeat(64)])('schema %j is refused with InvalidIdentifierError before anything connects', async (schema) => {
      let error: unknown;
      let c: IdempotentConsumer | undefined;
      try {
        c = new IdempotentConsumer({ client: testClient(), brokers, groupId: uniqueName('g'), topics: [topic], db: s.db, schema, handler: async () => undefined });
        await c.start();
      } catch (e) {
        error = e;
      } finally {
        await c?.stop();
      }
      expect(error).toBeInstanceOf(InvalidIdentifierError);
    });

    it('a schema migrated by a newer version (an unknown migration row) is refused, naming the schema and the unknown migrations; migrate() refuses it too', async () => {
      const newer = await createTestSchema(databaseUrl, 'nbr_newer');
      try {
        await sql`INSERT INTO ${sql.id(newer.schema, MIGRATION_TABLE)} (name, timestamp) VALUES ('9999-from-the-future', now()::text)`.execute(newer.db);
        const c = new IdempotentConsumer({ client: testClient(), brokers, groupId: uniqueName('g'), topics: [topic], db: newer.db, schema: newer.schema, handler: async () => undefined });
        const error = await c.start().then(
          () => undefined,
          (e: unknown) => e,
        );
        await c.stop();
        expect(error).toBeInstanceOf(SchemaNewerThanLibraryError);
        expect((error as SchemaNewerThanLibraryError).unknown).toEqual(['9999-from-the-future']);
        expect((error as Error).message).toContain(`Schema "${newer.schema}" was migrated by a newer version`);
        expect((error as Error).message).toContain('9999-from-the-future');
        await expect(migrate(newer.db, { schema: newer.schema })).rejects.toThrow(/9999-from-the-future/);
      } finally {
        await newer.drop();
      }
    });
  });
});
