import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';

type Db = Kysely<unknown> | Transaction<unknown>;

/** Attempts recorded for one event (`consumer_attempts`). */
export interface EventAttempts {
  eventId: string;
  attempts: number;
  lastError: string | null;
}

/** The partition's attempt state as the chunk transaction starts. */
export interface AttemptState {
  /** Offsets of the last started run of several handlers (`consumer_runs`), if any. */
  run: { first: bigint; last: bigint } | undefined;
  /** Recorded attempts by offset, for the chunk's offsets. */
  events: Map<bigint, EventAttempts>;
}

/** What the first statement of a chunk transaction returns. */
export interface ChunkStart {
  /** The backend running the transaction (to end it if user code cannot be stopped otherwise), and when it started (pids are reused). */
  backend: { pid: number; started: string };
  state: AttemptState;
}

const RELAXED = sql`WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS v)`;

/**
 * Attempt counts that survive rollbacks, crashes and rebalances.
 *
 * Before the first handler of a run starts, outside the chunk transaction (one autocommit
 * statement with `synchronous_commit = off`: a Postgres crash may lose the last count, a
 * consumer crash cannot), the run is recorded: a run of one event adds an attempt to that
 * event; a run of several records its offset range in `consumer_runs`. A failure or time-out
 * adds one to the failing event. So:
 *
 * - an event's attempts = its recorded attempts + 1 if it lies in the range of a run of several
 *   handlers that never finished (it may or may not have started);
 * - while a chunk starts inside such a range, or at an event with recorded attempts, events run
 *   one per transaction, so the next failure, crash or time-out is pinned to its event.
 *
 * Rows of events that settle are deleted in the transaction that settles them.
 */
export class AttemptLog {
  private readonly events;
  private readonly runs;

  constructor(
    schema: string,
    private readonly group: string,
  ) {
    this.events = sql.id(schema, 'consumer_attempts');
    this.runs = sql.id(schema, 'consumer_runs');
  }

  /**
   * Columns for the chunk transaction's first statement: the backend running it (pid and start
   * time) and the attempt state of the chunk's offsets; read back with {@link parseState}.
   */
  stateColumns(topic: string, partition: number, offsets: { first: string; last: string }): RawBuilder<unknown> {
    const where = sql`consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition}`;
    return sql`, pg_backend_pid() AS attempt_pid, (SELECT backend_start::text FROM pg_stat_get_activity(pg_backend_pid())) AS attempt_backend_start,
             (SELECT json_build_object('first', first_offset::text, 'last', last_offset::text) FROM ${this.runs} WHERE ${where}) AS attempt_run,
             (SELECT coalesce(json_agg(json_build_object('offset', event_offset::text, 'id', event_id, 'attempts', attempts, 'error', last_error)), '[]'::json)
                FROM ${this.events} WHERE ${where} AND event_offset BETWEEN ${offsets.first}::bigint AND ${offsets.last}::bigint) AS attempt_events`;
  }

  /** Reads the values of {@link stateColumns}. */
  parseState(row: Record<string, unknown>): ChunkStart {
    const run = row.attempt_run as { first: string; last: string } | null;
    const events = row.attempt_events as Array<{ offset: string; id: string; attempts: number; error: string | null }>;
    return {
      backend: { pid: row.attempt_pid as number, started: row.attempt_backend_start as string },
      state: {
        run: run === null ? undefined : { first: BigInt(run.first), last: BigInt(run.last) },
        events: new Map(events.map((e) => [BigInt(e.offset), { eventId: e.id, attempts: e.attempts, lastError: e.error }])),
      },
    };
  }

  /** Before the handlers of a run of several events start: remember its range. */
  async startRun(db: Db, topic: string, partition: number, first: string, last: string): Promise<void> {
    await sql`${RELAXED}
      INSERT INTO ${this.runs} (consumer_group, topic, partition, first_offset, last_offset)
      SELECT ${this.group}, ${topic}, ${partition}, ${first}::bigint, ${last}::bigint FROM relaxed
      ON CONFLICT (consumer_group, topic, partition) DO UPDATE
      SET first_offset = EXCLUDED.first_offset, last_offset = EXCLUDED.last_offset, updated_at = now()`.execute(db);
  }

  /** Forgets the run `first..last` if it is still the recorded one. */
  async forgetRun(db: Db, topic: string, partition: number, first: string, last: string): Promise<void> {
    await sql`DELETE FROM ${this.runs} WHERE consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition}
              AND first_offset = ${first}::bigint AND last_offset = ${last}::bigint`.execute(db);
  }

  /**
   * Adds one attempt to the event at `offset` (before its handler starts, or after a failure
   * that was not recorded that way), keeping or replacing the last error. With `durable: false`
   * the commit does not wait for the WAL flush (used outside the chunk transaction).
   */
  async addAttempt(db: Db, topic: string, partition: number, offset: string, eventId: string, error: string | null, durable: boolean): Promise<void> {
    const insert = sql`INSERT INTO ${this.events} (consumer_group, topic, partition, event_offset, event_id, attempts, last_error)`;
    const conflict = sql`ON CONFLICT (consumer_group, topic, partition, event_offset) DO UPDATE
      SET attempts = CASE WHEN ${this.events}.event_id = EXCLUDED.event_id THEN ${this.events}.attempts + 1 ELSE 1 END,
          event_id = EXCLUDED.event_id, last_error = coalesce(EXCLUDED.last_error, ${this.events}.last_error), updated_at = now()`;
    if (durable) {
      await sql`${insert} VALUES (${this.group}, ${topic}, ${partition}, ${offset}::bigint, ${eventId}, 1, ${error}) ${conflict}`.execute(db);
    } else {
      await sql`${RELAXED} ${insert} SELECT ${this.group}, ${topic}, ${partition}, ${offset}::bigint, ${eventId}, 1, ${error} FROM relaxed ${conflict}`.execute(db);
    }
  }

  /** Records why the current attempt of the event at `offset` failed (its attempt is already counted). */
  async setError(db: Db, topic: string, partition: number, offset: string, error: string): Promise<void> {
    await sql`UPDATE ${this.events} SET last_error = ${error}, updated_at = now()
              WHERE consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition} AND event_offset = ${offset}::bigint`.execute(db);
  }

  /** Takes back one attempt of the event at `offset` (a failure that was not the handler's, e.g. a lost connection). */
  async takeBack(db: Db, topic: string, partition: number, offset: string): Promise<void> {
    const where = sql`consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition} AND event_offset = ${offset}::bigint`;
    await sql`WITH lowered AS (UPDATE ${this.events} SET attempts = attempts - 1 WHERE ${where} AND attempts > 1 RETURNING 1)
              DELETE FROM ${this.events} WHERE ${where} AND attempts = 1 AND NOT EXISTS (SELECT 1 FROM lowered)`.execute(db);
  }

  /** Inside the settling transaction: forget the attempts of events that settled. */
  async settled(trx: Db, topic: string, partition: number, offsets: string[]): Promise<void> {
    if (offsets.length === 0) return;
    await sql`DELETE FROM ${this.events} WHERE consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition}
              AND event_offset = ANY(${offsets}::bigint[])`.execute(trx);
  }
}

/** Attempts already spent on the event at `offset` with id `eventId`. */
export function priorAttempts(state: AttemptState, offset: bigint, eventId: string): { total: number; recorded: number; lastError: string | null } {
  const row = state.events.get(offset);
  const recorded = row !== undefined && row.eventId === eventId ? row.attempts : 0;
  const inOpenRun = state.run !== undefined && state.run.first < state.run.last && offset >= state.run.first && offset <= state.run.last;
  return { total: recorded + (inOpenRun ? 1 : 0), recorded, lastError: recorded > 0 ? (row?.lastError ?? null) : null };
}

/**
 * How many of a run's fresh events (offsets in order) to handle in this transaction: one when
 * the first lies in the range of a run of several handlers that may not have finished, or has
 * recorded attempts; otherwise up to (not including) the first such event, so that it starts a
 * run of its own. Duplicates never count: a range that committed holds only duplicates.
 */
export function handledPrefix(state: AttemptState, offsets: bigint[]): number {
  const suspect = (o: bigint): boolean =>
    state.events.has(o) || (state.run !== undefined && state.run.first < state.run.last && o >= state.run.first && o <= state.run.last);
  const at = offsets.findIndex(suspect);
  if (at === 0) return 1;
  return at > 0 ? at : offsets.length;
}
