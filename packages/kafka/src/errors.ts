import { EffectivelyError, ErrorCodes } from '@effectively/core';

export { TransactionControlRefusedError } from '@effectively/core';

/** The handler did not finish within `handlerTimeoutMs`; its transaction was rolled back. */
export class HandlerTimeoutError extends EffectivelyError {
  constructor(timeoutMs: number) {
    super(ErrorCodes.HANDLER_TIMEOUT, `The handler did not finish within ${timeoutMs} ms; its transaction was rolled back and the event will be retried. Raise handlerTimeoutMs if the work is legitimately slow.`, { canRetry: true });
  }
}

/** This member no longer owns the partition (a newer member claimed it): its work was rolled back. */
export class FencedError extends EffectivelyError {
  constructor(topic: string, partition: number) {
    super(ErrorCodes.FENCED, `This consumer lost ${topic}[${partition}] to a newer member; its open transaction was rolled back so the effects happen only once.`, { canRetry: false });
  }
}

/**
 * A statement (through `trx`) or an outbox write (through `ctx.outbox`) came from handler code
 * whose attempt had already ended: it timed out, failed, was rolled back, or the consumer
 * stopped. It is refused so that it can neither run in autocommit nor land in a later
 * transaction. Await every statement inside the handler.
 */
export class AttemptEndedError extends EffectivelyError {
  constructor(why: string) {
    super(ErrorCodes.ATTEMPT_ENDED, `Refused a statement from a handler whose attempt is over (${why}); nothing it issues now can commit. Await every statement before the handler returns.`, { canRetry: false });
  }
}

const TRANSIENT_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available (lock_timeout)
  '57014', // query_canceled (statement_timeout)
  '57P01', // admin_shutdown (pg_terminate_backend, fast shutdown)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up / shutting down)
  '53300', // too_many_connections
  '25P03', // idle_in_transaction_session_timeout
  'EF001', // a claim on processed_events after dedup generations were enabled: retried on the generations
]);

/**
 * True for database errors that say nothing about the event: connection loss, serialization
 * failures, deadlocks, lock and statement time-outs, a server restarting. These are retried
 * with backoff without counting against the handler's attempts.
 */
export function isTransientDatabaseError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const e = error as { code?: unknown; message?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  if (TRANSIENT_SQLSTATES.has(code) || code.startsWith('08')) return true;
  if (['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ENOTCONN'].includes(code)) return true;
  const message = typeof e.message === 'string' ? e.message : '';
  return /Connection terminated|connection is closed|Client has encountered a connection error|timeout exceeded when trying to connect|Client was closed/i.test(message);
}
