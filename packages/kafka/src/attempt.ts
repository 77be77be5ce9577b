import type { Kysely, Transaction } from 'kysely';
import { guardTransaction, type Outbox } from '@effectively/core';
import { AttemptEndedError } from './errors';

/**
 * One run of user code (a handler, a batch handler) inside a chunk transaction. User code gets
 * {@link trx} and {@link outbox} from here instead of the chunk's own: once the attempt is
 * {@link end}ed — it returned, threw, timed out, or the consumer gave the transaction up — every
 * statement and outbox write it still issues is refused, so work of an abandoned attempt can
 * never run later in autocommit or in another transaction on the same connection.
 *
 * Statements issued before the end run in the attempt's transaction (they are queued ahead of
 * whatever the consumer does next on that connection); if the transaction is given up while
 * user code may still have one in flight, the consumer ends the connection instead of
 * returning it to the pool (see {@link ChunkConnection}).
 */
export class Attempt {
  private ended: string | undefined;
  /** The transaction as user code sees it: refuses statements once the attempt is over. */
  readonly trx: Transaction<unknown>;
  /** The outbox as user code sees it: refuses writes once the attempt is over. */
  readonly outbox: Outbox;

  constructor(trx: Transaction<unknown>, outbox: Outbox) {
    const check = (): void => this.assertLive();
    this.trx = guardTransaction(trx, { check });
    const guarded: Outbox = {
      schema: outbox.schema,
      publish<DB>(t: Transaction<DB> | Kysely<DB>, messages: Parameters<Outbox['publish']>[1]) {
        try {
          check();
        } catch (error) {
          return Promise.reject(error);
        }
        return outbox.publish(t, messages);
      },
    };
    this.outbox = Object.freeze(guarded);
  }

  /** True until {@link end}. */
  get live(): boolean {
    return this.ended === undefined;
  }

  /** Ends the attempt (idempotent; the first reason is kept). */
  end(why: string): void {
    this.ended ??= why;
  }

  private assertLive(): void {
    if (this.ended !== undefined) throw new AttemptEndedError(this.ended);
  }
}
