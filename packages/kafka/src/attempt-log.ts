import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import { CompiledOnce } from './prepared';
import { storableText } from './storable-text';

type Db = Kysely<unknown> | Transaction<unknown>;

/** A partition's attempt record (`consumer_attempts`) as a chunk transaction starts. */
export interface AttemptState {
  /** Offsets of the last started run of several handlers, if it may not have finished. */
  run: { first: bigint; last: bigint } | undefined;
  /** The event whose attempts are counted: offset, id, attempts started, last error. */
  event: { offset: bigint; eventId: string; attempts: number; lastError: string | null } | undefined;
}

/** What the chunk transaction's first statement says about the backend and the attempts. */
export interface ChunkStart {
  /** The backend running the transaction (to end it if user code cannot be stopped otherwise), and when it started (pids are reused). */
  backend: { pid: number; started: string };
  state: AttemptState;
}

const RELAXED = sql`WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS v)`;

/**
 * Attempt counts that survive rollbacks, crashes and rebalances, one row per partition.
 *
 * Before the first handler of a run starts, outside the chunk transaction (one autocommit
 * statement with `synchronous_commit = off`: a Postgres crash may lose the last count, a
 * consumer crash cannot), the run is recorded: a run of one event adds an attempt to that
 * event; a run of several records its offset range. A thrown error or a time-out is recorded
 * against its event. Hence:
 *
 * - an event's attempts = its recorded attempts + 1 if it lies in the range of a run of several
 *   handlers that never finished (it may or may not have started);
 * - a chunk whose first fresh event lies in such a range, or is the recorded event, runs one
 *   event per transaction, so the next failure, crash or time-out is pinned to its event; a
 *   run stops before the recorded event, which then starts a run of its own.
 *
 * A failure stops its run (the events after it wait for its retry), so one recorded event per
 * partition is enough.
 */
export class AttemptLog {
  private readonly table;
  /** The attempt records of {@link addAttempts} (what every handler about to run alone writes first). */
  private readonly starts: CompiledOnce<[unknown, unknown, unknown, unknown]>;

  constructor(
    schema: string,
    private readonly group: string,
    options: { preparedStatements?: boolean } = {},
  ) {
    this.table = sql.id(schema, 'consumer_attempts');
    this.starts = new CompiledOnce(options.preparedStatements ?? true);
  }

  /**
   * Columns for the chunk transaction's first statement: the backend running it (pid and start
   * time) and the partition's attempt record; read back with {@link parseState}. `topic` and
   * `partition` go in as values only (the statement may be compiled once with placeholders).
   */
  stateColumns(topic: unknown, partition: unknown): RawBuilder<unknown> {
    // The backend's start time is read from pg_stat_get_activity (which copies every backend's
    // status) once per session, then kept in a session setting: a property of this backend, so
    // correct whoever reads it (also behind a pooler); a rolled-back first read is read again.
    return sql`, pg_backend_pid() AS attempt_pid,
             coalesce(nullif(current_setting('effectively.backend_start', true), ''),
                      set_config('effectively.backend_start', (SELECT backend_start::text FROM pg_stat_get_activity(pg_backend_pid())), false)) AS attempt_backend_start,
             (SELECT json_build_object('run_first', run_first::text, 'run_last', run_last::text, 'offset', event_offset::text, 'id', event_id, 'attempts', attempts, 'error', last_error)
                FROM ${this.table} WHERE consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition}::int) AS attempt_state`;
  }

  /** Reads the values of {@link stateColumns}. */
  parseState(row: Record<string, unknown>): ChunkStart {
    const r = row['attempt_state'] as { run_first: string | null; run_last: string | null; offset: string | null; id: string | null; attempts: number; error: string | null } | null;
    return {
      backend: { pid: row['attempt_pid'] as number, started: row['attempt_backend_start'] as string },
      state: {
        run: r === null || r.run_first === null || r.run_last === null ? undefined : { first: BigInt(r.run_first), last: BigInt(r.run_last) },
        event: r === null || r.offset === null || r.id === null ? undefined : { offset: BigInt(r.offset), eventId: r.id, attempts: r.attempts, lastError: r.error },
      },
    };
  }

  private key(topic: string, partition: number) {
    return sql`${this.group}, ${topic}, ${partition}`;
  }

  /** Before the handlers of a run of several events start: remember its range. */
  async startRun(db: Db, topic: string, partition: number, first: string, last: string): Promise<void> {
    await sql`${RELAXED}
      INSERT INTO ${this.table} (consumer_group, topic, partition, run_first, run_last)
      SELECT ${this.key(topic, partition)}, ${first}::bigint, ${last}::bigint FROM relaxed
      ON CONFLICT (consumer_group, topic, partition) DO UPDATE
      SET run_first = EXCLUDED.run_first, run_last = EXCLUDED.run_last, updated_at = now()`.execute(db);
  }

  /** Forgets the run `first..last` if it is still the recorded one. */
  async forgetRun(db: Db, topic: string, partition: number, first: string, last: string): Promise<void> {
    await sql`UPDATE ${this.table} SET run_first = NULL, run_last = NULL, updated_at = now()
              WHERE consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition}
                AND run_first = ${first}::bigint AND run_last = ${last}::bigint`.execute(db);
  }

  /**
   * Adds one attempt to the event at `offset` (before its handler starts alone, or after a
   * failure in a run of several, then also forgetting that run), keeping or replacing the last
   * error. With `durable: false` the commit does not wait for the WAL flush.
   */
  async addAttempt(db: Db, topic: string, partition: number, event: { offset: string; eventId: string }, options: AddAttemptOptions): Promise<void> {
    await this.addAttemptQuery(topic, partition, event.offset, event.eventId, options).execute(db);
  }

  /** The statement of {@link addAttempt}; every argument but `options` goes in as a value. */
  private addAttemptQuery(topic: unknown, partition: unknown, offset: unknown, eventId: unknown, options: AddAttemptOptions): RawBuilder<unknown> {
    const t = this.table;
    const same = sql`${t}.event_offset = EXCLUDED.event_offset AND ${t}.event_id = EXCLUDED.event_id`;
    const run = options.forgetRun ?? options.absorbRun;
    const error = options.error === null ? null : storableText(options.error);
    const source = sql`${this.group}, ${topic}, ${partition}, ${offset}::bigint, ${eventId}, 1, ${error}::text`;
    const upsert = sql`INSERT INTO ${t} (consumer_group, topic, partition, event_offset, event_id, attempts, last_error)`;
    // The absorbed run's attempt (see AddAttemptOptions.absorbRun) counts once, only while that run is still the recorded one.
    const absorbed =
      options.absorbRun === undefined ? sql`` : sql` + CASE WHEN ${t}.run_first = ${options.absorbRun.first}::bigint AND ${t}.run_last = ${options.absorbRun.last}::bigint THEN 1 ELSE 0 END`;
    const conflict = sql`ON CONFLICT (consumer_group, topic, partition) DO UPDATE
      SET attempts = CASE WHEN ${same} THEN ${t}.attempts + 1 ELSE 1 END${absorbed},
          last_error = coalesce(EXCLUDED.last_error, CASE WHEN ${same} THEN ${t}.last_error END),
          event_offset = EXCLUDED.event_offset, event_id = EXCLUDED.event_id,
          run_first = ${run === undefined ? sql`${t}.run_first` : sql`CASE WHEN ${t}.run_first = ${run.first}::bigint AND ${t}.run_last = ${run.last}::bigint THEN NULL ELSE ${t}.run_first END`},
          run_last = ${run === undefined ? sql`${t}.run_last` : sql`CASE WHEN ${t}.run_first = ${run.first}::bigint AND ${t}.run_last = ${run.last}::bigint THEN NULL ELSE ${t}.run_last END`},
          updated_at = now()`;
    return options.durable ? sql`${upsert} VALUES (${source}) ${conflict}` : sql`${RELAXED} ${upsert} SELECT ${source} FROM relaxed ${conflict}`;
  }

  /**
   * {@link addAttempt} without an error, not durable (what a handler about to run alone records)
   * for several partitions in ONE statement: the records that partitions in flight ask for while
   * another is being written. At most one entry per partition (a row cannot be updated twice in
   * one statement); {@link AttemptStarts} guarantees it.
   */
  async addAttempts(db: Db, starts: readonly AttemptStart[]): Promise<void> {
    if (starts.length === 0) return;
    // Compiled once; prepared once per connection (it runs on the consumer's bookkeeping connection) when named.
    if (starts.length === 1) {
      const s = starts[0] as AttemptStart;
      await this.starts.execute(db, 'one', [s.topic, s.partition, s.offset, s.eventId], (topic, partition, offset, eventId) =>
        this.addAttemptQuery(topic, partition, offset, eventId, { error: null, durable: false }),
      );
      return;
    }
    const t = this.table;
    const same = sql`${t}.event_offset = EXCLUDED.event_offset AND ${t}.event_id = EXCLUDED.event_id`;
    await this.starts.execute(
      db,
      'many',
      [starts.map((x) => x.topic), starts.map((x) => x.partition), starts.map((x) => x.offset), starts.map((x) => x.eventId)],
      (topics, partitions, offsets, eventIds) => sql`${RELAXED}
      INSERT INTO ${t} (consumer_group, topic, partition, event_offset, event_id, attempts, last_error)
      SELECT ${this.group}, s.topic, s.partition, s.event_offset, s.event_id, 1, NULL::text
      FROM relaxed, unnest(${topics}::text[], ${partitions}::int[], ${offsets}::bigint[], ${eventIds}::text[])
           AS s(topic, partition, event_offset, event_id)
      ON CONFLICT (consumer_group, topic, partition) DO UPDATE
      SET attempts = CASE WHEN ${same} THEN ${t}.attempts + 1 ELSE 1 END,
          last_error = CASE WHEN ${same} THEN ${t}.last_error END,
          event_offset = EXCLUDED.event_offset, event_id = EXCLUDED.event_id,
          updated_at = now()`,
    );
  }

  /** Records why the counted attempt of the event at `offset` failed. */
  async setError(db: Db, topic: string, partition: number, offset: string, error: string): Promise<void> {
    await sql`UPDATE ${this.table} SET last_error = ${storableText(error)}, updated_at = now()
              WHERE consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition} AND event_offset = ${offset}::bigint`.execute(db);
  }

  /** Takes back one attempt of the event at `offset` (a failure that was not the handler's, e.g. a lost connection). */
  async takeBack(db: Db, topic: string, partition: number, offset: string): Promise<void> {
    await sql`UPDATE ${this.table} SET attempts = attempts - 1, updated_at = now()
              WHERE consumer_group = ${this.group} AND topic = ${topic} AND partition = ${partition} AND event_offset = ${offset}::bigint AND attempts > 0`.execute(db);
  }
}

/** What {@link AttemptLog.addAttempt} does besides adding one attempt. */
export interface AddAttemptOptions {
  /** The error of the attempt (null: keep the recorded one if it is the same event). */
  error: string | null;
  /** false: the commit does not wait for the WAL flush. */
  durable: boolean;
  /** Forget the run `first..last` if it is still the recorded one (the failed event now has a count of its own). */
  forgetRun?: { first: string; last: string };
  /**
   * Per-event mode, the first event not yet committed of a run another consumer recorded (it
   * was running there when that consumer ended, or was next): add that run's attempt to this
   * event's count and forget the run, so the events after it count none.
   */
  absorbRun?: { first: string; last: string };
}

/** A handler about to run alone: its attempt, recorded before it starts. */
export interface AttemptStart {
  topic: string;
  partition: number;
  offset: string;
  eventId: string;
}

/**
 * Coalesces the attempt records of partitions in flight: the first is written at once; those
 * asked for while a statement runs go together in the next one ({@link AttemptLog.addAttempts}),
 * so with n partitions in flight the bookkeeping connection writes up to n records per
 * statement instead of queueing n statements. Each caller waits for its own record.
 */
export class AttemptStarts {
  private queue: Array<AttemptStart & { done: () => void; failed: (error: unknown) => void }> = [];
  private writing = false;

  constructor(private readonly write: (starts: AttemptStart[]) => Promise<void>) {}

  record(start: AttemptStart): Promise<void> {
    return new Promise<void>((done, failed) => {
      this.queue.push({ ...start, done, failed });
      if (!this.writing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.writing = true;
    while (this.queue.length > 0) {
      // One entry per partition per statement; a second one for a partition waits for the next.
      const taken: typeof this.queue = [];
      const rest: typeof this.queue = [];
      const partitions = new Set<string>();
      for (const q of this.queue) {
        const key = `${q.partition}:${q.topic}`;
        (partitions.has(key) ? rest : taken).push(q);
        partitions.add(key);
      }
      this.queue = rest;
      try {
        await this.write(taken.map(({ topic, partition, offset, eventId }) => ({ topic, partition, offset, eventId })));
        for (const q of taken) q.done();
      } catch (error) {
        for (const q of taken) q.failed(error);
      }
    }
    this.writing = false;
  }
}

function inOpenRun(state: AttemptState, offset: bigint): boolean {
  const run = state.run;
  return run !== undefined && run.first < run.last && offset >= run.first && offset <= run.last;
}

/** Attempts already spent on the event at `offset` with id `eventId` (`recorded`: those it had alone or failed; `total`: with an unfinished run). */
export function priorAttempts(state: AttemptState, offset: bigint, eventId: string): { total: number; recorded: number; lastError: string | null } {
  const e = state.event;
  const recorded = e !== undefined && e.offset === offset && e.eventId === eventId ? e.attempts : 0;
  return { total: recorded + (inOpenRun(state, offset) ? 1 : 0), recorded, lastError: recorded > 0 ? (e?.lastError ?? null) : null };
}

/**
 * How many of a run's fresh events (offsets in order) to handle in this transaction: one when
 * the first lies in the range of a run of several handlers that may not have finished, or is
 * the recorded event; otherwise up to (not including) the first such event, so that it starts a
 * run of its own. Duplicates never count: a range that committed holds only duplicates.
 */
export function handledPrefix(state: AttemptState, offsets: bigint[]): number {
  const at = offsets.findIndex((o) => (state.event !== undefined && state.event.offset === o && state.event.attempts > 0) || inOpenRun(state, o));
  if (at === 0) return 1;
  return at > 0 ? at : offsets.length;
}
