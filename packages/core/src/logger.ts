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

/** kafkajs' numeric log levels (ERROR 1, WARN 2, INFO 4, DEBUG 5), without depending on kafkajs. */
const KAFKAJS_ERROR = 1;
const KAFKAJS_WARN = 2;
const KAFKAJS_INFO = 4;

/** The shape of a kafkajs log entry that {@link kafkajsLogCreator} reads. */
export interface KafkajsLogEntry {
  level: number;
  log: { message: string } & Record<string, unknown>;
}

/**
 * A kafkajs `logCreator` that writes through pino: kafkajs errors and warnings as such, its
 * chatty info lines at debug, the rest at trace, each tagged `component: 'kafkajs'`.
 */
export function kafkajsLogCreator(logger: Logger): () => (entry: KafkajsLogEntry) => void {
  return () =>
    ({ level, log }) => {
      const { message, ...extra } = log;
      const entry = { ...extra, component: 'kafkajs' };
      if (level === KAFKAJS_ERROR) logger.error(entry, message);
      else if (level === KAFKAJS_WARN) logger.warn(entry, message);
      else if (level === KAFKAJS_INFO) logger.debug(entry, message);
      else logger.trace(entry, message);
    };
}
