import { InvalidConfigError } from './errors';
import pino from 'pino';

/**
 * The structured logger every component accepts. It is pino's interface; pass your own
 * instance (or a child of it) to route the library's logs into your application's stream.
 */
export type Logger = pino.Logger;

/**
 * Creates the default logger: JSON to stdout at `info` (or the `LOG_LEVEL` variable), with
 * `name` bound so every line says which component wrote it.
 */
export function createLogger(name: string, level: string = process.env['LOG_LEVEL'] ?? 'info'): Logger {
  return pino({ name, level });
}

/** A logger that discards everything, for callers who wire logging elsewhere. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

const LOGGER_METHODS = ['child', 'bindings', 'trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

/**
 * The `logger` option as given, or a silent logger when it is `undefined`. `option` names the
 * option in the error (e.g. `'createRelay options.logger'`).
 *
 * @throws InvalidConfigError when the value is not a pino logger (a factory such as
 *   `silentLogger` passed uncalled, a console, a plain object).
 */
export function loggerOption(value: unknown, option: string): Logger {
  if (value === undefined) return silentLogger();
  if (typeof value === 'function') {
    throw new InvalidConfigError(`${option} must be a pino logger, got a function: call it (e.g. silentLogger() or createLogger('my-service')), or pass your application's pino logger.`);
  }
  const missing = typeof value === 'object' && value !== null ? LOGGER_METHODS.filter((m) => typeof (value as Record<string, unknown>)[m] !== 'function') : [...LOGGER_METHODS];
  if (missing.length > 0) {
    throw new InvalidConfigError(`${option} must be a pino logger (it lacks ${missing.join(', ')}): pass createLogger('my-service'), silentLogger(), or your application's pino logger.`);
  }
  return value as Logger;
}

/**
 * `logger.child(bindings)` without the keys `logger` already binds. pino writes a key once per
 * binding, so a child that binds a key its parent (or your application's logger) already has
 * would put it twice on every line; the binding already there is kept.
 */
export function childLogger(logger: Logger, bindings: Record<string, unknown>): Logger {
  return logger.child(withoutKeys(bindings, boundKeys(logger)));
}

function boundKeys(logger: Logger): ReadonlySet<string> {
  return new Set(Object.keys(logger.bindings()));
}

function withoutKeys(fields: Record<string, unknown>, keys: ReadonlySet<string>): Record<string, unknown> {
  if (keys.size === 0) return fields;
  return Object.fromEntries(Object.entries(fields).filter(([k]) => !keys.has(k)));
}

/** kafkajs' numeric log levels (ERROR 1, WARN 2, INFO 4, DEBUG 5), without depending on kafkajs. */
const KAFKAJS_ERROR = 1;
const KAFKAJS_WARN = 2;
const KAFKAJS_INFO = 4;

/** The shape of a kafkajs log entry that {@link kafkajsLogCreator} reads. */
export interface KafkajsLogEntry {
  level: number;
  /** kafkajs' component, e.g. `Connection`, `Consumer`, `BrokerPool`. */
  namespace?: string;
  log: { message: string } & Record<string, unknown>;
}

/**
 * kafkajs logs at ERROR what it then handles itself: a broker's error answer on a connection
 * (`Response GroupCoordinator …` with `error: 'The group coordinator is not available'` while a
 * fresh cluster elects its coordinator; the request is retried, or the error reaches the caller,
 * which reports it), and every attempt of its retrier (lines with `retryTime`: "Failed to send
 * messages", "Failed to connect to seed broker", "Restarting the consumer in …"). Those are
 * warnings; what stays an error is what kafkajs gives up on ("Crash: …", a failed listener).
 */
function transient(log: KafkajsLogEntry['log']): boolean {
  if (typeof log['retryTime'] === 'number') return true;
  return log.message.startsWith('Response ') && typeof log['error'] === 'string';
}

/**
 * kafkajs warnings about settings this library chooses on purpose, with why they are safe here.
 * They are logged at info with the explanation in `note`, so an operator reading warnings sees
 * only what needs attention.
 */
const EXPLAINED_WARNINGS: ReadonlyMap<string, string> = new Map([
  [
    'Limiting retries for the idempotent producer may invalidate EoS guarantees',
    'effectively bounds kafkajs retries on purpose and retries itself; a record sent again keeps its event id, so consumers skip the copy',
  ],
]);

/**
 * A kafkajs `logCreator` that writes through pino, tagged `component: 'kafkajs'` (unless the
 * logger already binds `component`; no key is ever written twice): kafkajs errors as errors,
 * except what kafkajs retries or hands back to its caller (see above), which are warnings like
 * its own; warnings about settings the library chooses on purpose (the idempotent producer's
 * bounded retries) at info with a `note` saying why; its chatty info lines at debug, the rest at trace.
 */
export function kafkajsLogCreator(logger: Logger): () => (entry: KafkajsLogEntry) => void {
  const log = childLogger(logger, { component: 'kafkajs' });
  const bound = boundKeys(log);
  return () =>
    ({ level, log: entry }) => {
      const { message, ...extra } = entry;
      const fields = withoutKeys(extra, bound);
      if (level === KAFKAJS_ERROR) {
        if (transient(entry)) log.warn(fields, message);
        else log.error(fields, message);
      } else if (level === KAFKAJS_WARN) {
        const note = EXPLAINED_WARNINGS.get(message);
        if (note === undefined) log.warn(fields, message);
        else log.info({ ...fields, note }, message);
      }
      else if (level === KAFKAJS_INFO) log.debug(fields, message);
      else log.trace(fields, message);
    };
}
