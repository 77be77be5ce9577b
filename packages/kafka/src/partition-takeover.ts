import { sql, type Kysely } from 'kysely';
import type { Logger } from '@effectively/core';
import type { SideConnection } from './side-connection';
import type { ProcessedEventStore } from './store';

/** Postgres `lock_not_available`: what a lock wait that ran out of `lock_timeout` raises. */
const LOCK_NOT_AVAILABLE = '55P03';

function isLockTimeout(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === LOCK_NOT_AVAILABLE;
}

/**
 * Records a new owner epoch for a partition (`partition_fences`). Every chunk transaction locks
 * its partition's fence row, so taking the partition waits for the previous owner's open
 * transaction: that wait is what keeps effects exactly-once (the old transaction either
 * commits before the new epoch exists, or fails the epoch check). A member frozen inside such
 * a transaction would make the wait last until Postgres ends its session; instead, after
 * `graceMs`, the blocking session is terminated (`pg_terminate_backend`), which rolls its work
 * back, and the take completes.
 */
export class PartitionTakeover {
  constructor(
    private readonly db: Kysely<unknown>,
    private readonly store: ProcessedEventStore,
    private readonly side: SideConnection,
    private readonly logger: Logger,
  ) {}

  /** Takes the partition if no transaction holds it; undefined when one does (not waiting). */
  async tryTake(topic: string, partition: number, memberId: string): Promise<string | undefined> {
    try {
      return await this.store.takePartition(this.db, topic, partition, memberId, 50);
    } catch (error) {
      if (isLockTimeout(error)) return undefined;
      throw error;
    }
  }

  /**
   * Takes the partition, waiting at most `graceMs` for a transaction that holds it, then
   * ending that transaction's session (again every second while another one blocks).
   */
  async take(topic: string, partition: number, memberId: string, graceMs: number): Promise<string> {
    return this.db.transaction().execute(async (trx) => {
      const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid, set_config('lock_timeout', ${`${graceMs + 60_000}ms`}, true) AS l`.execute(trx);
      const waiter = (rows[0] as { pid: number }).pid;
      let timer: NodeJS.Timeout | undefined;
      let done = false;
      const endBlockers = async (): Promise<void> => {
        if (done) return;
        try {
          const end = sql<{ pid: number; ended: boolean }>`
            SELECT b.pid, pg_terminate_backend(b.pid) AS ended FROM unnest(pg_blocking_pids(${waiter}::int)) AS b(pid)`;
          const ended = await this.side.run((db) => end.execute(db), 5000);
          if (ended.rows.length > 0) {
            this.logger.warn({ topic, partition, sessions: ended.rows.map((r) => r.pid), graceMs }, 'the previous owner of this partition held it past takeoverTimeoutMs (frozen or slow member); ended its session, its open work rolls back');
          }
        } catch (error) {
          this.logger.warn({ err: error, topic, partition }, 'could not end the session that holds this partition; still waiting');
        }
        if (!done) timer = setTimeout(() => void endBlockers(), 1000);
      };
      timer = setTimeout(() => void endBlockers(), graceMs);
      try {
        return await this.store.takePartition(trx, topic, partition, memberId);
      } finally {
        done = true;
        clearTimeout(timer);
      }
    });
  }
}
