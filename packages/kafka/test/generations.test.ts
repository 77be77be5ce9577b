import { sql, type Kysely } from 'kysely';
import { createDatabase, InvalidConfigError } from '@effectively/core';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';
import { enableGenerations, pruneProcessedEvents, readGenerations, rotateProcessedEvents } from '../src';
import { GenerationStore } from '../src/generation-store';
import { ProcessedEventStore } from '../src/store';
import type { ClaimRow, OpenResult } from '../src/store';
import { count } from './support/ledger';

// Retention by generations, at the level of the claim statement and the rotation (no Kafka):
// interleavings of a claim with a rotation that a consumer cannot be made to hit on purpose.
const GROUP = 'g';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function row(id: string, offset = 0): ClaimRow {
  return { eventId: id, origin: 'producer', payloadHash: `h-${id}`, topic: 't', partition: 0, offset: String(offset), status: 'processed', error: null };
}

/** Claims `ids` in one transaction; `hold` keeps it open (claim made, not committed) until it resolves; `opened` is called once the claim statement returned. */
async function claim(db: Kysely<unknown>, store: GenerationStore, ids: string[], hold?: Promise<void>, opened?: () => void): Promise<OpenResult> {
  return db.transaction().execute(async (trx) => {
    const r = await store.open(trx, { lockTimeoutMs: 20_000, statementTimeoutMs: 30_000, rows: ids.map((id, i) => row(id, i)) });
    opened?.();
    if (hold !== undefined) await hold;
    return r;
  });
}

/** Whether `id` is claimed anew now (committed) — i.e. not remembered. */
async function isNew(db: Kysely<unknown>, store: GenerationStore, id: string): Promise<boolean> {
  return (await claim(db, store, [id])).claimed.size === 1;
}

describe('retention by generations: claims and rotation', () => {
  const { databaseUrl } = testServices();
  let s: TestSchema;
  let other: ReturnType<typeof createDatabase>;
  beforeEach(async () => {
    s = await createTestSchema(databaseUrl, 'gens', { max: 6 });
    other = createDatabase({ connectionString: databaseUrl, max: 3, applicationName: 'effectively-test-rotator' });
  });
  afterEach(async () => {
    await other.destroy();
    await s.drop();
  });

  it('refuses bad settings with what to do, and pruneProcessedEvents on a schema on generations', async () => {
    await expect(enableGenerations(s.db, { schema: s.schema, windowMs: 500, intervalMs: 100 })).rejects.toThrow(/windowMs must be .* at least 1000/);
    await expect(enableGenerations(s.db, { schema: s.schema, windowMs: 10_000, intervalMs: 20_000 })).rejects.toThrow(/must not exceed windowMs/);
    await expect(enableGenerations(s.db, { schema: s.schema, windowMs: 86_400_000, intervalMs: 60_000 })).rejects.toThrow(/choose a longer intervalMs/);
    await expect(enableGenerations(s.db, { schema: s.schema, windowMs: 1.5e3 + 0.5, intervalMs: 100 })).rejects.toBeInstanceOf(InvalidConfigError);
    await expect(rotateProcessedEvents(s.db, { schema: s.schema })).rejects.toThrow(/not enabled .* effectively retention enable/);
    await expect(enableGenerations(s.db, { schema: 'a;drop', windowMs: 10_000, intervalMs: 1_000 })).rejects.toThrow(/safe identifier/);
    expect((await readGenerations(s.db, { schema: s.schema })).enabled).toBe(false);
    const state = await enableGenerations(s.db, { schema: s.schema, windowMs: 10_000, intervalMs: 1_000 });
    expect(state).toMatchObject({ enabled: true, windowMs: 10_000, intervalMs: 1_000, slots: 12, currentGeneration: 1 });
    await expect(pruneProcessedEvents(s.db, { schema: s.schema, olderThanMs: 1000 })).rejects.toThrow(/by generations/);
  });

  it('a copy claimed while a rotation switches generations is still a duplicate (claim in flight in the old generation)', async () => {
    await enableGenerations(s.db, { schema: s.schema, windowMs: 5_000, intervalMs: 1_000 });
    const store = new GenerationStore(s.schema, GROUP);
    await sleep(1_050); // the current generation is due
    let commitA!: () => void;
    let openedA!: () => void;
    const aOpened = new Promise<void>((r) => (openedA = r));
    const a = claim(s.db, store, ['x'], new Promise<void>((r) => (commitA = r)), openedA);
    await aOpened; // A holds its claim of x in generation 1, uncommitted
    const rotation = rotateProcessedEvents(other.db, { schema: s.schema, lockTimeoutMs: 20_000 });
    await sleep(200); // the rotation waits for A
    const b = claim(s.db, store, ['x', 'y']); // B queues behind the rotation
    await sleep(200);
    commitA();
    expect((await a).claimed.size).toBe(1);
    expect((await rotation).rotated).toBe(true);
    const rb = await b;
    expect([...rb.claimed]).toEqual([expect.stringContaining('y')]);
    // x once, in generation 1's slot; y in generation 2's.
    const { rows } = await sql<{ event_id: string; slot: number }>`SELECT event_id, slot FROM ${sql.id(s.schema, 'processed_event_generations')} ORDER BY event_id`.execute(s.db);
    expect(rows).toEqual([{ event_id: 'x', slot: 0 }, { event_id: 'y', slot: 1 }]);
  });

  it('two consumers, one still in the old generation and one in the new: the id is claimed once', async () => {
    await enableGenerations(s.db, { schema: s.schema, windowMs: 5_000, intervalMs: 250 });
    const store = new GenerationStore(s.schema, GROUP);
    for (let round = 0; round < 15; round++) {
      await sleep(260);
      const id = `r${round}`;
      // Two claims of the same id and a rotation, started together in every order.
      const results = await Promise.all([claim(s.db, store, [id]), rotateProcessedEvents(other.db, { schema: s.schema, lockTimeoutMs: 20_000 }), claim(other.db, store, [id, `${id}-b`])]);
      // Exactly one of the two claims took the id.
      expect(results[0].claimed.size + (results[2].claimed.has(`producer\u0000${id}`) ? 1 : 0)).toBe(1);
    }
    const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${sql.id(s.schema, 'processed_event_generations')} WHERE event_id LIKE 'r%' AND event_id NOT LIKE '%-b' GROUP BY event_id HAVING count(*) > 1`.execute(s.db);
    expect(rows).toEqual([]);
    expect((await readGenerations(s.db, { schema: s.schema })).currentGeneration).toBeGreaterThan(5);
  });

  it('rotation from several processes at once: one switch per due interval, generations consecutive, nothing lost', async () => {
    await enableGenerations(s.db, { schema: s.schema, windowMs: 1_000, intervalMs: 200 });
    const store = new GenerationStore(s.schema, GROUP);
    const dbs = [s.db, other.db, s.db, other.db];
    let claims = 0;
    const end = Date.now() + 3_000;
    const rotated: number[] = [];
    const claiming = (async () => {
      while (Date.now() < end) expect((await claim(s.db, store, [`c${claims++}`])).claimed.size).toBe(1);
    })();
    while (Date.now() < end) {
      const results = await Promise.all(dbs.map((db) => rotateProcessedEvents(db, { schema: s.schema })));
      for (const r of results) if (r.rotated) rotated.push(r.currentGeneration);
      await sleep(50);
    }
    await claiming;
    expect(rotated.length).toBeGreaterThan(5);
    // No generation made twice (calls started together may each have made a different one).
    expect(new Set(rotated).size).toBe(rotated.length);
    expect([...rotated].sort((x, y) => x - y)).toEqual(rotated.map((_, i) => Math.min(...rotated) + i));
    const state = await readGenerations(s.db, { schema: s.schema });
    expect(state.live.filter((g) => g.endedAt === null)).toHaveLength(1);
    expect(state.live.map((g) => g.generation)).toEqual(state.live.map((g, i) => (state.live[0]?.generation ?? 0) + i));
    expect(state.live.length).toBeLessThanOrEqual(state.slots - 1);
  });

  it('the window is honoured: an id is remembered at least windowMs, forgotten by window + interval + one check', async () => {
    const windowMs = 2_000;
    const intervalMs = 500;
    await enableGenerations(s.db, { schema: s.schema, windowMs, intervalMs });
    const store = new GenerationStore(s.schema, GROUP);
    let stop = false;
    const rotating = (async () => {
      while (!stop) {
        await rotateProcessedEvents(other.db, { schema: s.schema });
        await sleep(50);
      }
    })();
    try {
      await sleep(300);
      expect(await isNew(s.db, store, 'w')).toBe(true);
      const written = Date.now();
      // Younger than the window: always remembered (a copy is a duplicate), across several rotations.
      while (Date.now() - written < windowMs - 100) {
        expect(await isNew(s.db, store, 'w')).toBe(false);
        await sleep(50);
      }
      // Then forgotten, not before the window, and no later than window + interval + a check and margin.
      let forgottenAt = 0;
      while (Date.now() - written < windowMs + intervalMs + 1_500) {
        const checked = Date.now();
        if (await isNew(s.db, store, 'w')) {
          forgottenAt = checked;
          break;
        }
        await sleep(25);
      }
      expect(forgottenAt).toBeGreaterThan(0);
      expect(forgottenAt - written).toBeGreaterThanOrEqual(windowMs);
    } finally {
      stop = true;
      await rotating;
    }
  });

  it('a rotation ended mid-way (its session killed while switching) leaves a usable state', async () => {
    await enableGenerations(s.db, { schema: s.schema, windowMs: 5_000, intervalMs: 500 });
    const store = new GenerationStore(s.schema, GROUP);
    expect(await isNew(s.db, store, 'k1')).toBe(true);
    await sleep(550);
    // A claim held open makes the rotation wait inside its transaction; its session is then ended.
    let commitA!: () => void;
    let openedA!: () => void;
    const aOpened = new Promise<void>((r) => (openedA = r));
    const a = claim(s.db, store, ['k2'], new Promise<void>((r) => (commitA = r)), openedA);
    await aOpened;
    const killed = rotateProcessedEvents(other.db, { schema: s.schema, lockTimeoutMs: 20_000 }).then(
      () => 'finished',
      (e: unknown) => String(e),
    );
    await sleep(300);
    await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'effectively-test-rotator' AND wait_event_type = 'Lock'`.execute(s.db);
    expect(await killed).toMatch(/terminat/);
    commitA();
    await a;
    const before = await readGenerations(s.db, { schema: s.schema });
    expect(before.currentGeneration).toBe(1);
    // Also a switch rolled back after its updates: the same state as before.
    await expect(
      other.db.transaction().execute(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(hashtext('effectively.dedup-generations'), hashtext(${s.schema}))`.execute(trx);
        await sql`UPDATE ${sql.id(s.schema, 'dedup_retention')} SET current_slot = 1, current_generation = 2`.execute(trx);
        await sql`SELECT pg_terminate_backend(pg_backend_pid())`.execute(trx);
      }),
    ).rejects.toThrow();
    expect((await readGenerations(s.db, { schema: s.schema })).currentGeneration).toBe(1);
    expect(await isNew(s.db, store, 'k1')).toBe(false);
    expect(await isNew(s.db, store, 'k2')).toBe(false);
    expect((await rotateProcessedEvents(s.db, { schema: s.schema })).rotated).toBe(true);
    expect(await isNew(s.db, store, 'k1')).toBe(false);
    expect(await isNew(s.db, store, 'k3')).toBe(true);
  });

  it('a re-drive moves a dead-lettered record of an older generation into the current one; a restore puts its status back (the record stays in the current generation)', async () => {
    await enableGenerations(s.db, { schema: s.schema, windowMs: 5_000, intervalMs: 500 });
    const store = new GenerationStore(s.schema, GROUP);
    await s.db.transaction().execute(async (trx) => {
      await store.open(trx, { lockTimeoutMs: 5_000, statementTimeoutMs: 30_000, rows: [{ ...row('d'), status: 'dead_lettered', error: 'handler-failed: boom' }] });
    });
    await sleep(550);
    expect((await rotateProcessedEvents(s.db, { schema: s.schema })).rotated).toBe(true);
    const where = sql`event_id = 'd'`;
    const read = async () => (await sql<{ slot: number; status: string; redrive_id: string | null }>`SELECT slot, status, redrive_id FROM ${sql.id(s.schema, 'processed_event_generations')} WHERE ${where}`.execute(s.db)).rows;
    expect(await read()).toEqual([{ slot: 0, status: 'dead_lettered', redrive_id: null }]);
    // A re-drive whose handling does not settle: status and re-drive id restored (the record stays in the current generation: kept longer, never shorter).
    await s.db.transaction().execute(async (trx) => {
      const r = await store.open(trx, { lockTimeoutMs: 5_000, statementTimeoutMs: 30_000, rows: [row('d')] });
      expect(r.claimed.size).toBe(0);
      expect(r.stored.get('producer\u0000d')?.status).toBe('dead_lettered');
      const taken = await store.redrive(trx, [{ origin: 'producer', eventId: 'd', redriveId: 'r1', offset: '9' }]);
      expect(taken).toHaveLength(1);
      await store.restore(trx, taken);
    });
    expect(await read()).toEqual([{ slot: 1, status: 'dead_lettered', redrive_id: null }]);
    await s.db.transaction().execute(async (trx) => {
      await store.open(trx, { lockTimeoutMs: 5_000, statementTimeoutMs: 30_000, rows: [row('d')] });
      expect(await store.redrive(trx, [{ origin: 'producer', eventId: 'd', redriveId: 'r1', offset: '9' }])).toHaveLength(1);
    });
    expect(await read()).toEqual([{ slot: 1, status: 'processed', redrive_id: 'r1' }]);
    // The same re-drive again is a duplicate; the record is still one.
    await s.db.transaction().execute(async (trx) => {
      const r = await store.open(trx, { lockTimeoutMs: 5_000, statementTimeoutMs: 30_000, rows: [row('d')] });
      expect(r.claimed.size).toBe(0);
      expect(await store.redrive(trx, [{ origin: 'producer', eventId: 'd', redriveId: 'r1', offset: '10' }])).toHaveLength(0);
    });
    expect(await count(s.db, s.schema, 'processed_event_generations', where)).toBe(1);
  });

  /** Three older generations of `perGeneration` keys each (`old-<g>-<i>`), filled since their last ANALYZE; then the current one, empty. */
  const fillOlderGenerations = async (perGeneration: number): Promise<void> => {
    await enableGenerations(s.db, { schema: s.schema, windowMs: 10_000, intervalMs: 1_000 });
    const gens = sql.id(s.schema, 'processed_event_generations');
    for (let g = 0; g < 3; g++) {
      await sql`INSERT INTO ${gens} (consumer_group, event_id, status, payload_hash, topic, partition, kafka_offset, slot)
                SELECT ${GROUP}, ${`old-${g}-`} || i, 'processed', 'h', 't', 0, i, (SELECT current_slot FROM ${sql.id(s.schema, 'dedup_retention')})
                FROM generate_series(1, ${perGeneration}::int) i`.execute(s.db);
      await sleep(1_050);
      expect((await rotateProcessedEvents(s.db, { schema: s.schema })).rotated).toBe(true);
    }
  };
  /** Index entries and heap rows read so far from the tables named like `relname` (pg_stat_user_*; a transaction's counters after its commit). */
  const readsOf = async (relname: string): Promise<number> => {
    const { rows } = await sql<{ n: string }>`
      SELECT (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE schemaname = ${s.schema} AND relname LIKE ${relname})
           + (SELECT coalesce(sum(seq_tup_read), 0) FROM pg_stat_user_tables WHERE schemaname = ${s.schema} AND relname LIKE ${relname}) AS n`.execute(other.db);
    return Number(rows[0]!.n);
  };
  const generationsRead = (): Promise<number> => readsOf('processed_event_generations%');

  /**
   * One transaction of a chunk whose handlers failed: 500 new ids claimed, 499 claims released,
   * the first dead-lettered in place; then a re-drive of `copies` (processed records, so not
   * taken) and a restore of them.
   */
  const failedChunk = async (store: ProcessedEventStore, round: number, copies: string[]): Promise<void> => {
    const ids = Array.from({ length: 500 }, (_, i) => `fail-${round}-${i}`);
    await s.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_stat_force_next_flush()`.execute(trx); // this backend's counters reach pg_stat_* at commit
      const r = await store.open(trx, { lockTimeoutMs: 20_000, statementTimeoutMs: 30_000, rows: ids.map((id, i) => row(id, i)) });
      expect(r.claimed.size).toBe(500);
      await store.release(trx, ids.slice(1).map((eventId) => ({ origin: 'producer', eventId })));
      await store.markDeadLettered(trx, { origin: 'producer', eventId: ids[0]! }, 'failed', 3);
      const requests = copies.map((eventId) => ({ origin: 'producer' as const, eventId, redriveId: `r-${round}`, offset: '1' }));
      expect(await store.redrive(trx, requests)).toEqual([]);
      await store.restore(trx, requests.map((k) => ({ origin: k.origin, eventId: k.eventId, previousRedriveId: null, previousError: 'e', previousAttempts: 1 })));
    });
  };

  it('claims probe the older generations key by key: generations filled since their last ANALYZE are never read whole', async () => {
    // Migration 0008's gate asked EXISTS (…) OR (…) per key, which Postgres ran as a hashed subplan
    // over partitions it had no statistics for: every key of the group in every older generation
    // read by every claim (600,000 index entries a claim of 500, 800–950 ms). One probe per key and
    // generation reads only the keys that are there.
    await fillOlderGenerations(20_000);
    const store = new GenerationStore(s.schema, GROUP);
    const before = await generationsRead();
    const claims = 8; // past the 5 custom plans after which PL/pgSQL may keep a generic one
    for (let c = 0; c < claims; c++) {
      const copies = [0, 1, 2].map((g) => `old-${g}-${c * 100 + 7}`);
      const ids = [...copies, ...Array.from({ length: 497 }, (_, i) => `new-${c}-${i}`)];
      const r = await s.db.transaction().execute(async (trx) => {
        await sql`SELECT pg_stat_force_next_flush()`.execute(trx); // this backend's counters reach pg_stat_* at commit
        return store.open(trx, { lockTimeoutMs: 20_000, statementTimeoutMs: 30_000, rows: ids.map((id, i) => row(id, i)) });
      });
      expect(r.claimed.size).toBe(497);
      expect([...r.stored.keys()].sort()).toEqual(copies.map((id) => `producer\u0000${id}`).sort());
    }
    // Reads of the generations' tables and indexes: the copies found (and their stored hashes),
    // never the 60,000 keys the older generations hold.
    expect(await generationsRead() - before).toBeLessThan(claims * 100);
  });

  it('releasing failed claims, dead-lettering, re-driving and restoring read only the keys they name, however stale the generations\' statistics', async () => {
    // The same kind of plan as the gate's: a key set joined to partitions Postgres believes empty
    // may be hashed against a whole partition. Each statement must find its keys by primary key.
    await fillOlderGenerations(20_000);
    const store = new GenerationStore(s.schema, GROUP);
    const before = await generationsRead();
    const rounds = 6; // past the 5 custom plans
    const restored: string[] = [];
    for (let c = 0; c < rounds; c++) {
      const copies = [0, 1, 2].map((g) => `old-${g}-${c * 100 + 9}`);
      await failedChunk(store, c, copies);
      restored.push(...copies);
    }
    // 500 claimed + 499 released + 1 marked + 3 copies probed and restored per round, over 4 live generations: a few thousand at most, never the 60,000 keys.
    expect(await generationsRead() - before).toBeLessThan(rounds * 2_500);
    const { rows } = await sql<{ event_id: string; status: string }>`SELECT event_id, status FROM ${sql.id(s.schema, 'processed_event_generations')} WHERE event_id LIKE 'fail-%' ORDER BY event_id`.execute(s.db);
    expect(rows).toEqual(Array.from({ length: rounds }, (_, c) => ({ event_id: `fail-${c}-0`, status: 'dead_lettered' })));
    // The restores found their records where they are, in the older generations.
    const back = await sql<{ status: string }>`SELECT status FROM ${sql.id(s.schema, 'processed_event_generations')} WHERE event_id = ANY (${restored}::text[])`.execute(s.db);
    expect(back.rows.map((r) => r.status)).toEqual(restored.map(() => 'dead_lettered'));
  });

  it('without generations too: releasing, dead-lettering, re-driving and restoring read only the keys they name while processed_events has no statistics yet', async () => {
    const events = sql.id(s.schema, 'processed_events');
    await sql`INSERT INTO ${events} (consumer_group, event_id, status, payload_hash, topic, partition, kafka_offset)
              SELECT ${GROUP}, 'old-' || i, 'processed', 'h', 't', 0, i FROM generate_series(1, 60000) i`.execute(s.db);
    const store = new ProcessedEventStore(s.schema, GROUP);
    const before = await readsOf('processed_events');
    const rounds = 6;
    for (let c = 0; c < rounds; c++) await failedChunk(store, c, [0, 1, 2].map((g) => `old-${c * 100 + g + 1}`));
    expect(await readsOf('processed_events') - before).toBeLessThan(rounds * 2_500);
    const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM ${events} WHERE event_id LIKE 'fail-%' OR status = 'dead_lettered'`.execute(s.db);
    expect(Number(rows[0]!.n)).toBe(rounds + rounds * 3);
  });

  it.each(['processed_events', 'generations'] as const)('a re-drive waiting for a record another re-drive took, then restored and committed, takes it (%s)', async (kind) => {
    if (kind === 'generations') await enableGenerations(s.db, { schema: s.schema, windowMs: 10_000, intervalMs: 1_000 });
    const table = sql.id(s.schema, kind === 'generations' ? 'processed_event_generations' : 'processed_events');
    const store = kind === 'generations' ? new GenerationStore(s.schema, GROUP) : new ProcessedEventStore(s.schema, GROUP);
    const open = (trx: Parameters<typeof store.open>[0]) => store.open(trx, { lockTimeoutMs: 20_000, statementTimeoutMs: 30_000, rows: [row('dl')] });
    await s.db.transaction().execute(async (trx) => {
      await open(trx);
      await store.markDeadLettered(trx, { origin: 'producer', eventId: 'dl' }, 'failed', 3);
    });
    const key = { origin: 'producer' as const, eventId: 'dl', offset: '5' };
    const signal = (): [Promise<void>, () => void] => {
      let fire!: () => void;
      const p = new Promise<void>((r) => (fire = r));
      return [p, fire];
    };
    const [secondOpened, secondOpen] = signal();
    const [firstTook, firstTake] = signal();
    const [restoring, restoreNow] = signal();
    // The second re-drive's transaction opens first (its claim statement finds the record and waits for nothing) ...
    const second = other.db.transaction().execute(async (trx) => {
      await open(trx);
      secondOpen();
      await firstTook;
      // ... then waits for the record's lock, which the first holds; once the first commits, the record is dead-lettered again: taken.
      return store.redrive(trx, [{ ...key, redriveId: 'r2' }]);
    });
    await secondOpened;
    // The first re-drive takes the record, then (its handling did not settle) restores it and commits.
    const first = s.db.transaction().execute(async (trx) => {
      await open(trx);
      const taken = await store.redrive(trx, [{ ...key, redriveId: 'r1' }]);
      expect(taken).toHaveLength(1);
      firstTake();
      await restoring;
      await store.restore(trx, taken);
    });
    await sleep(300);
    restoreNow();
    await first;
    expect(await second).toEqual([{ origin: 'producer', eventId: 'dl', previousRedriveId: null, previousError: 'failed', previousAttempts: 3 }]);
    const { rows } = await sql<{ status: string; redrive_id: string | null }>`SELECT status, redrive_id FROM ${table} WHERE consumer_group = ${GROUP} AND event_id = 'dl'`.execute(s.db);
    expect(rows).toEqual([{ status: 'processed', redrive_id: 'r2' }]);
  });

  it('records made before generations were enabled are still checked, then forgotten with the window', async () => {
    const legacy = sql.id(s.schema, 'processed_events');
    await sql`INSERT INTO ${legacy} (consumer_group, event_id, status, payload_hash, topic, partition, kafka_offset) VALUES (${GROUP}, 'old', 'processed', 'h-old', 't', 0, 1)`.execute(s.db);
    await enableGenerations(s.db, { schema: s.schema, windowMs: 1_000, intervalMs: 500 });
    const store = new GenerationStore(s.schema, GROUP);
    const r = await claim(s.db, store, ['old', 'new']);
    expect(r.claimed.size).toBe(1);
    expect(r.stored.get('producer\u0000old')).toEqual({ payloadHash: 'h-old', status: 'processed' });
    // The legacy table takes no claims any more.
    await expect(sql`INSERT INTO ${legacy} (consumer_group, event_id, status, payload_hash, topic, partition, kafka_offset) VALUES (${GROUP}, 'late', 'processed', 'h', 't', 0, 2)`.execute(s.db)).rejects.toMatchObject({ code: 'EF001' });
    await sleep(1_100);
    const rotation = await rotateProcessedEvents(s.db, { schema: s.schema });
    expect(rotation.legacyForgotten).toBe(true);
    expect(await count(s.db, s.schema, 'processed_events')).toBe(0);
    expect(await isNew(s.db, store, 'old')).toBe(true);
  });
});
