import { sql, type Kysely, type Transaction } from 'kysely';
import { assertIdentifier, InvalidConfigError, untyped } from '@effectively/core';

type Db = Kysely<unknown> | Transaction<unknown>;

/** SQLSTATE of a claim on the legacy `processed_events` after generations were enabled. */
export const LEGACY_CLOSED_SQLSTATE = 'EF001';

/** The advisory lock claims hold shared and rotation exclusively (the same expression as migration 0008's gate). */
function lockKey(schema: string) {
  return sql`hashtext('effectively.dedup-generations'), hashtext(${schema})`;
}

/** Smallest window, rotation interval and largest number of slots {@link enableGenerations} accepts. */
export const GENERATION_LIMITS = { minWindowMs: 1_000, minIntervalMs: 100, maxSlots: 200 } as const;

/** What {@link enableGenerations} needs. */
export interface EnableGenerationsOptions {
  schema?: string;
  /** Every id is remembered at least this long after its record was written (the dedup window). */
  windowMs: number;
  /** How long a generation is current before the next one takes over (a time slice). */
  intervalMs: number;
  /** How long to wait for running claims (lock_timeout); default 10 s. */
  lockTimeoutMs?: number;
}

/** One generation that still holds records. */
export interface LiveGeneration {
  generation: number;
  slot: number;
  startedAt: Date;
  /** When it stopped being current (null: it is the current one). */
  endedAt: Date | null;
  /** When its records will be forgotten at the earliest (ended + window; null while current). */
  forgettableAt: Date | null;
}

/** The state of retention by generations in a schema, as {@link readGenerations} reads it. */
export interface GenerationsState {
  enabled: boolean;
  windowMs: number | null;
  intervalMs: number | null;
  slots: number;
  currentGeneration: number | null;
  rotatedAt: Date | null;
  live: LiveGeneration[];
  /** The records `processed_events` held when generations were enabled: still checked until `forgettableAt`. */
  legacy: { endedAt: Date; forgottenAt: Date | null; forgettableAt: Date } | null;
}

/** What {@link rotateProcessedEvents} did. */
export interface RotationResult {
  /** True when a new generation became current. */
  rotated: boolean;
  currentGeneration: number;
  /** Generations whose records were forgotten (their slot emptied by TRUNCATE). */
  forgotten: number[];
  /** True when the pre-generations records of `processed_events` were forgotten (TRUNCATE). */
  legacyForgotten: boolean;
  /** Set when a due rotation could not happen (no empty slot: rotations ran faster than the window allows). */
  postponed?: string;
}

function positiveMs(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidConfigError(`${name} must be a whole number of milliseconds, at least ${min}; got ${String(value)}.`);
  }
  return value;
}

/** Slots needed for `windowMs` / `intervalMs`: the current generation, the ended ones younger than the window, one empty for the next rotation, one spare for rotations that run late. */
export function slotsFor(windowMs: number, intervalMs: number): number {
  return Math.ceil(windowMs / intervalMs) + 2;
}

function validate(options: EnableGenerationsOptions): { schema: string; windowMs: number; intervalMs: number; slots: number; lockTimeoutMs: number } {
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const windowMs = positiveMs(options.windowMs, 'windowMs', GENERATION_LIMITS.minWindowMs);
  const intervalMs = positiveMs(options.intervalMs, 'intervalMs', GENERATION_LIMITS.minIntervalMs);
  if (intervalMs > windowMs) throw new InvalidConfigError(`intervalMs (${intervalMs}) must not exceed windowMs (${windowMs}): an id is kept up to window + interval; rotate at least once per window (e.g. window 7d, interval 1d).`);
  const slots = slotsFor(windowMs, intervalMs);
  if (slots > GENERATION_LIMITS.maxSlots) throw new InvalidConfigError(`windowMs / intervalMs needs ${slots} generations; at most ${GENERATION_LIMITS.maxSlots} are allowed (every claim checks each live one): choose a longer intervalMs.`);
  const lockTimeoutMs = positiveMs(options.lockTimeoutMs ?? 10_000, 'lockTimeoutMs', 1);
  return { schema, windowMs, intervalMs, slots, lockTimeoutMs };
}

async function setLockTimeout(trx: Db, ms: number): Promise<void> {
  await sql`SELECT set_config('lock_timeout', ${`${ms}ms`}, true)`.execute(trx);
}

/**
 * Turns retention by generations on for `schema` (or changes its window and interval). From
 * then on claims go to `processed_event_generations`; `processed_events` takes no new claims (a
 * trigger refuses them with SQLSTATE EF001: a consumer still claiming there switches over, or
 * fails if it predates generations) and its records are still checked until `windowMs` after
 * this call, then emptied by a rotation. One transaction: it waits (up to `lockTimeoutMs`) for
 * claims in flight. Running it again with other values changes them (adding slots if needed).
 */
export async function enableGenerations<DB>(database: Kysely<DB>, options: EnableGenerationsOptions): Promise<GenerationsState> {
  const o = validate(options);
  const db = untyped(database);
  const t = (name: string) => sql.id(o.schema, name);
  await db.transaction().execute(async (trx) => {
    await setLockTimeout(trx, o.lockTimeoutMs);
    await sql`SELECT pg_advisory_xact_lock(${lockKey(o.schema)})`.execute(trx);
    const { rows } = await sql<{ enabled: boolean; n: number }>`SELECT enabled, (SELECT count(*)::int FROM ${t('dedup_generations')}) AS n FROM ${t('dedup_retention')} FOR UPDATE`.execute(trx);
    const state = rows[0];
    if (state === undefined) throw new InvalidConfigError(`schema ${o.schema} has no dedup_retention row: run migrate() (migration 0008) first.`);
    for (let slot = state.n; slot < o.slots; slot++) {
      // A table attached as a partition: ATTACH locks the parent only SHARE UPDATE EXCLUSIVE (claims keep running).
      const part = t(`processed_event_generations_${slot}`);
      await sql`CREATE TABLE ${part} (LIKE ${t('processed_event_generations')} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`.execute(trx);
      await sql`ALTER TABLE ${t('processed_event_generations')} ATTACH PARTITION ${part} FOR VALUES IN (${sql.lit(slot)})`.execute(trx);
      await sql`INSERT INTO ${t('dedup_generations')} (slot) VALUES (${slot})`.execute(trx);
    }
    if (!state.enabled) {
      // Waits for claims in flight on the legacy table, and refuses every later one.
      await sql`CREATE TRIGGER processed_events_closed BEFORE INSERT ON ${t('processed_events')} FOR EACH STATEMENT EXECUTE FUNCTION ${t('dedup_legacy_closed')}()`.execute(trx);
      await sql`UPDATE ${t('dedup_generations')} SET generation = 1, started_at = clock_timestamp(), ended_at = NULL, forgotten_at = NULL WHERE slot = 0`.execute(trx);
      await sql`UPDATE ${t('dedup_retention')} SET enabled = true, enabled_at = clock_timestamp(), rotated_at = clock_timestamp(), current_slot = 0, current_generation = 1,
                legacy_ended_at = clock_timestamp(),
                legacy_forgotten_at = CASE WHEN EXISTS (SELECT 1 FROM ${t('processed_events')}) THEN NULL ELSE clock_timestamp() END`.execute(trx);
    }
    await sql`UPDATE ${t('dedup_retention')} SET window_ms = ${o.windowMs}, interval_ms = ${o.intervalMs}`.execute(trx);
  });
  return readGenerations(db, { schema: o.schema });
}

/** Reads the state of retention by generations (a schema migrated before 0008 reads as not enabled). */
export async function readGenerations<DB>(database: Kysely<DB>, options: { schema?: string } = {}): Promise<GenerationsState> {
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const db = untyped(database);
  const t = (name: string) => sql.id(schema, name);
  const exists = await sql<{ r: string | null }>`SELECT to_regclass(${`${schema}.dedup_retention`})::text AS r`.execute(db);
  const off: GenerationsState = { enabled: false, windowMs: null, intervalMs: null, slots: 0, currentGeneration: null, rotatedAt: null, live: [], legacy: null };
  if ((exists.rows[0]?.r ?? null) === null) return off;
  const { rows } = await sql<{ enabled: boolean; window_ms: string | null; interval_ms: string | null; current_generation: string | null; rotated_at: Date | null; legacy_ended_at: Date | null; legacy_forgotten_at: Date | null; slots: number }>`
    SELECT enabled, window_ms::text, interval_ms::text, current_generation::text, rotated_at, legacy_ended_at, legacy_forgotten_at,
           (SELECT count(*)::int FROM ${t('dedup_generations')}) AS slots
    FROM ${t('dedup_retention')}`.execute(db);
  const r = rows[0];
  if (r === undefined || !r.enabled) return { ...off, slots: r?.slots ?? 0 };
  const windowMs = Number(r.window_ms);
  const gens = await sql<{ gen: string; slot: number; started_at: Date; ended_at: Date | null }>`
    SELECT generation::text AS gen, slot, started_at, ended_at FROM ${t('dedup_generations')} WHERE generation IS NOT NULL ORDER BY generation`.execute(db);
  return {
    enabled: true,
    windowMs,
    intervalMs: Number(r.interval_ms),
    slots: r.slots,
    currentGeneration: Number(r.current_generation),
    rotatedAt: r.rotated_at,
    live: gens.rows.map((g) => ({ generation: Number(g.gen), slot: g.slot, startedAt: g.started_at, endedAt: g.ended_at, forgettableAt: g.ended_at === null ? null : new Date(g.ended_at.getTime() + windowMs) })),
    legacy: r.legacy_ended_at === null ? null : { endedAt: r.legacy_ended_at, forgottenAt: r.legacy_forgotten_at, forgettableAt: new Date(r.legacy_ended_at.getTime() + windowMs) },
  };
}

/**
 * Retention by generations, one step; safe to call from any number of processes at any time
 * (cron, `effectively retention rotate`, or every consumer on its own schedule):
 * - forgets every generation that stopped being current at least `windowMs` ago (TRUNCATE of
 *   its slot, never a row-by-row DELETE), and the pre-generations `processed_events` records
 *   once `windowMs` has passed since generations were enabled;
 * - when the current generation has been current for `intervalMs`, makes a new one current in
 *   an empty slot, forgetting what expired in the same transaction. The switch holds the claims'
 *   advisory lock exclusively: it waits for claims in flight (at most `lockTimeoutMs`, default
 *   2 s, then gives up until the next call) and new claims wait for it (a few statements).
 * Each call is one transaction (a crash leaves the state before or after it) that re-checks
 * under its locks, so a second process doing the same finds nothing to do.
 */
export async function rotateProcessedEvents<DB>(database: Kysely<DB>, options: { schema?: string; lockTimeoutMs?: number } = {}): Promise<RotationResult> {
  const schema = assertIdentifier(options.schema ?? 'effectively', 'schema');
  const lockTimeoutMs = positiveMs(options.lockTimeoutMs ?? 2_000, 'lockTimeoutMs', 1);
  const db = untyped(database);
  const t = (name: string) => sql.id(schema, name);
  const state = await readGenerations(db, { schema });
  if (!state.enabled) throw new InvalidConfigError(`dedup generations are not enabled in schema ${schema}: enable them first (enableGenerations, or effectively retention enable --window 7d --interval 1d).`);
  const windowSecs = sql`make_interval(secs => ${(state.windowMs ?? 0) / 1000})`;

  /**
   * Forgets, in `trx`, what is expired among `slots` (and the legacy table when `legacy`); row locks
   * on the slots re-check it, so a second process finds nothing. The partitions must be the ones
   * this transaction may lock: a claim locks every partition when its statement starts and only
   * then waits for the advisory lock, so under that lock only partitions locked before it may be
   * truncated (else the two wait for each other).
   */
  const forget = async (trx: Transaction<unknown>, into: RotationResult, slots: number[], legacy: boolean): Promise<void> => {
    const { rows } = await sql<{ slot: number; generation: string }>`
      SELECT g.slot, g.generation::text AS generation FROM ${t('dedup_generations')} g, ${t('dedup_retention')} r
      WHERE g.slot = ANY (${slots}::int[]) AND g.generation IS NOT NULL AND g.slot <> r.current_slot AND g.ended_at <= clock_timestamp() - ${windowSecs}
      ORDER BY g.generation FOR UPDATE OF g`.execute(trx);
    for (const g of rows) {
      await sql`TRUNCATE ${t(`processed_event_generations_${g.slot}`)}`.execute(trx);
      await sql`UPDATE ${t('dedup_generations')} SET generation = NULL, started_at = NULL, ended_at = NULL, forgotten_at = clock_timestamp() WHERE slot = ${g.slot}`.execute(trx);
      into.forgotten.push(Number(g.generation));
    }
    if (!legacy) return;
    const due = await sql`SELECT 1 FROM ${t('dedup_retention')} WHERE legacy_forgotten_at IS NULL AND legacy_ended_at <= clock_timestamp() - ${windowSecs} FOR UPDATE`.execute(trx);
    if (due.rows.length > 0) {
      await sql`TRUNCATE ${t('processed_events')}`.execute(trx);
      await sql`UPDATE ${t('dedup_retention')} SET legacy_forgotten_at = clock_timestamp()`.execute(trx);
      into.legacyForgotten = true;
    }
  };
  /**
   * Takes the partitions (and the legacy table) to forget ACCESS EXCLUSIVE: waits for the claims in
   * flight (which read them all); new claims wait. In the order a claim locks them (partitions by
   * slot, then the legacy table), so that the two never wait for each other.
   */
  const lockTables = async (trx: Transaction<unknown>, slots: number[], legacy: boolean): Promise<void> => {
    const tables = [...[...slots].sort((a, b) => a - b).map((slot) => t(`processed_event_generations_${slot}`)), ...(legacy ? [t('processed_events')] : [])];
    if (tables.length > 0) await sql`LOCK TABLE ${sql.join(tables)} IN ACCESS EXCLUSIVE MODE`.execute(trx);
  };
  const result: RotationResult = { rotated: false, currentGeneration: state.currentGeneration ?? 0, forgotten: [], legacyForgotten: false };
  const current = state.live.find((g) => g.endedAt === null);
  const due = current === undefined || Date.now() - current.startedAt.getTime() >= (state.intervalMs ?? 0) - 50;
  const expiredSoon = (at: Date | null): boolean => at !== null && at.getTime() <= Date.now() + 50;
  const slots = state.live.filter((g) => g.endedAt !== null && expiredSoon(g.forgettableAt)).map((g) => g.slot);
  const legacy = state.legacy !== null && state.legacy.forgottenAt === null && expiredSoon(state.legacy.forgettableAt);
  if (!due) {
    // Only forgetting: TRUNCATE locks just the expired slots (claims in flight, which read every slot, finish first; new ones wait for it).
    if (slots.length > 0 || legacy) {
      await db.transaction().execute(async (trx) => {
        await setLockTimeout(trx, lockTimeoutMs);
        await lockTables(trx, slots, legacy);
        await forget(trx, result, slots, legacy);
      });
    }
    return result;
  }
  // A switch, with what expired forgotten in the same pause (a window that is a multiple of the interval expires one generation per switch).
  return db.transaction().execute(async (trx) => {
    await setLockTimeout(trx, lockTimeoutMs);
    await lockTables(trx, slots, legacy);
    // Exclusive: every claim holding the shared lock (its transaction) has ended, none starts until commit.
    await sql`SELECT pg_advisory_xact_lock(${lockKey(schema)})`.execute(trx);
    await forget(trx, result, slots, legacy);
    // A new statement, so a fresh snapshot: sees a rotation another process committed meanwhile.
    const { rows } = await sql<{ current_slot: number; current_generation: string; is_due: boolean; next_slot: number | null }>`
      SELECT r.current_slot, r.current_generation::text,
             (SELECT g.started_at <= clock_timestamp() - make_interval(secs => r.interval_ms / 1000.0) FROM ${t('dedup_generations')} g WHERE g.slot = r.current_slot) AS is_due,
             (SELECT min(g.slot) FROM ${t('dedup_generations')} g WHERE g.generation IS NULL) AS next_slot
      FROM ${t('dedup_retention')} r WHERE r.enabled FOR UPDATE OF r`.execute(trx);
    const r = rows[0];
    if (r === undefined) throw new InvalidConfigError(`dedup generations are not enabled in schema ${schema}.`);
    result.currentGeneration = Number(r.current_generation);
    if (!r.is_due) return result;
    if (r.next_slot === null) return { ...result, postponed: `no empty slot: every generation is younger than the window; the current one stays current until one is forgotten` };
    const next = result.currentGeneration + 1;
    await sql`UPDATE ${t('dedup_generations')} SET ended_at = clock_timestamp() WHERE slot = ${r.current_slot}`.execute(trx);
    await sql`UPDATE ${t('dedup_generations')} SET generation = ${next}, started_at = clock_timestamp(), ended_at = NULL, forgotten_at = NULL WHERE slot = ${r.next_slot}`.execute(trx);
    await sql`UPDATE ${t('dedup_retention')} SET current_slot = ${r.next_slot}, current_generation = ${next}, rotated_at = clock_timestamp()`.execute(trx);
    return { ...result, rotated: true, currentGeneration: next };
  });
}

/** True when `processed_events` retention in `schema` is by generations (a schema migrated before 0008: false). */
export async function generationsEnabled(db: Db, schema: string): Promise<boolean> {
  const exists = await sql<{ r: string | null }>`SELECT to_regclass(${`${schema}.dedup_retention`})::text AS r`.execute(db);
  if ((exists.rows[0]?.r ?? null) === null) return false;
  const { rows } = await sql<{ enabled: boolean }>`SELECT enabled FROM ${sql.id(schema, 'dedup_retention')}`.execute(db);
  return rows[0]?.enabled === true;
}
