import type { Kysely } from 'kysely';
import type { Logger } from '@effectively/core';

/** No side connection within the wait: the caller carries on without its side statement. */
export class SideConnectionUnavailable extends Error {
  constructor(waitMs: number) {
    super(`no database connection for the consumer's bookkeeping within ${waitMs} ms`);
  }
}

/**
 * One pooled connection the consumer keeps for statements outside its chunk transactions
 * (attempt records written before handlers start, ending a given-up transaction's session,
 * ending a frozen previous owner's session). Chunk transactions hold pool connections while
 * they need these, so taking another from the pool then could wait forever on a small pool;
 * this one is taken at start and kept. If it breaks it is taken again in the background, and
 * a statement that cannot get it within its wait is skipped by its caller.
 */
export class SideConnection {
  private conn: Kysely<unknown> | undefined;
  private acquiring: Promise<void> | undefined;
  private release: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly db: Kysely<unknown>,
    private readonly logger: Logger,
  ) {}

  /** Takes the connection (at start, before any chunk transaction holds the pool). */
  open(): Promise<void> {
    return this.acquire();
  }

  /**
   * Runs `fn` on the connection, waiting at most `waitMs` for it.
   * @throws SideConnectionUnavailable when it cannot be had in time.
   */
  async run<R>(fn: (db: Kysely<unknown>) => Promise<R>, waitMs: number): Promise<R> {
    if (this.conn === undefined) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.acquire(), new Promise<void>((r) => (timer = setTimeout(r, waitMs)))]);
      clearTimeout(timer);
    }
    const conn = this.conn;
    if (conn === undefined) throw new SideConnectionUnavailable(waitMs);
    try {
      return await fn(conn);
    } catch (error) {
      if (isBroken(error)) this.drop(conn);
      throw error;
    }
  }

  /** Gives the connection back to the pool. */
  close(): void {
    this.closed = true;
    if (this.conn !== undefined) this.drop(this.conn);
  }

  private acquire(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.acquiring ??= new Promise<void>((ready) => {
      this.db
        .connection()
        .execute(
          (conn) =>
            new Promise<void>((done) => {
              this.conn = conn;
              this.release = done;
              ready();
            }),
        )
        .catch((error: unknown) => {
          this.logger.warn({ err: error }, 'could not take a connection for the consumer bookkeeping; retrying on next use');
          this.acquiring = undefined;
          ready();
        });
    });
    return this.acquiring;
  }

  private drop(conn: Kysely<unknown>): void {
    if (this.conn !== conn) return;
    this.conn = undefined;
    this.acquiring = undefined;
    const release = this.release;
    this.release = undefined;
    release?.();
  }
}

function isBroken(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : '';
  return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || /Connection terminated|not queryable|connection is closed|ECONNRESET|EPIPE/i.test(message);
}
