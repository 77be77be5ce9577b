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
export function createLogger(name: string, level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level });
}

/** A logger that discards everything, for callers who wire logging elsewhere. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
