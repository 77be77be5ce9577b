import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { sql, type Transaction } from 'kysely';
import { createOutbox, createOutboxBuffer, type Outbox } from '../src';

/** Resolves once `ms` passed. */
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('outbox buffer: one lane-lock statement at the end of the transaction', () => {
  const { databaseUrl } = testServices();
  let s: TestSchema;
  let keyA: string;
  let keyB: string;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'outbox_buf', { max: 6 });
    // Two keys in different lanes.
    const lane = async (key: string): Promise<number> =>
      (await sql<{ lane: number }>`SELECT ${sql.id(s.schema, 'outbox_lane')}(convert_to(${key}, 'UTF8'), NULL) AS lane`.execute(s.db)).rows[0]?.lane as number;
    keyA = 'key-a';
    const laneA = await lane(keyA);
    for (let i = 0; ; i++) {
      keyB = `key-b${i}`;
      if ((await lane(keyB)) !== laneA) break;
    }
  });
  afterAll(async () => s.drop());

  /** Two transactions publish keys A then B, and B then A, in separate calls, interleaved. */
  async function crossed(make: () => { outbox: Outbox; flush: (trx: Transaction<unknown>) => Promise<unknown> }): Promise<PromiseSettledResult<void>[]> {
    const run = (first: string, second: string): Promise<void> =>
      s.db.transaction().execute(async (trx) => {
        await sql`SELECT set_config('lock_timeout', '10s', true)`.execute(trx);
        const w = make();
        await w.outbox.publish(trx, { topic: 't', key: first, value: `${first} first` });
        await sleep(300); // both transactions now hold their first lane (when publishing locks at once)
        await w.outbox.publish(trx, { topic: 't', key: second, value: `${second} second` });
        await w.flush(trx);
      });
    return Promise.allSettled([run(keyA, keyB), run(keyB, keyA)]);
  }

  it('direct publish in crossed order deadlocks (the hazard), the buffer does not', async () => {
    const direct = await crossed(() => ({ outbox: createOutbox({ schema: s.schema }), flush: async () => undefined }));
    const failures = direct.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(failures).toHaveLength(1);
    expect(String((failures[0]?.reason as { code?: string }).code)).toBe('40P01');

    const buffered = await crossed(() => {
      const b = createOutboxBuffer({ schema: s.schema });
      return { outbox: b.outbox, flush: (trx) => b.flush(trx) };
    });
    expect(buffered.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
  });

  it('queues checked rows, rolls back to a mark, and flush writes them (reporting ids already there)', async () => {
    const b = createOutboxBuffer({ schema: s.schema });
    await expect(b.outbox.publish(s.db, { topic: 'bad topic', value: 'v' })).rejects.toThrow(/not a valid Kafka topic/);
    const queued = await b.outbox.publish(s.db, [{ topic: 't', key: 'k', value: 'kept', eventId: 'buf-1' }]);
    expect(queued).toEqual({ eventIds: ['buf-1'], inserted: 1, alreadyPublished: [] });
    const mark = b.mark();
    await b.outbox.publish(s.db, { topic: 't', key: 'k', value: 'dropped', eventId: 'buf-2' });
    b.rollbackTo(mark);
    await b.outbox.publish(s.db, { topic: 't', key: 'k', value: 'again', eventId: 'buf-1' });
    // Nothing is written before flush.
    const before = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(s.schema, 'outbox')} WHERE event_id LIKE 'buf-%'`.execute(s.db);
    expect(Number(before.rows[0]?.n)).toBe(0);
    const written = await s.db.transaction().execute((trx) => b.flush(trx));
    expect(written).toEqual({ eventIds: ['buf-1', 'buf-1'], inserted: 1, alreadyPublished: ['buf-1'] });
    const { rows } = await sql<{ event_id: string; v: string }>`
      SELECT event_id, convert_from(payload, 'UTF8') AS v FROM ${sql.id(s.schema, 'outbox')} WHERE event_id LIKE 'buf-%' ORDER BY id`.execute(s.db);
    expect(rows).toEqual([{ event_id: 'buf-1', v: 'kept' }]);
    expect(await b.flush(s.db)).toEqual({ eventIds: [], inserted: 0, alreadyPublished: [] });
  });
});
