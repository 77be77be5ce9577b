/** Readers for option values shared by several commands. */
import { createLogger, InvalidConfigError, type Logger } from '@effectively/core';

/** Parses a duration like `30m`, `12h`, `7d` (units ms, s, m, h, d) into milliseconds. */
export function durationMs(value: string, what: string): number {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(value);
  if (match === null) throw new InvalidConfigError(`${what} must be a duration like 30m, 12h or 7d, got ${JSON.stringify(value)}.`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

/** A non-negative integer from a flag or its environment variable; `undefined` when neither is set. */
export function intValue(flag: string | undefined, env: Readonly<Record<string, string | undefined>>, name: string, variable: string): number | undefined {
  const raw = flag ?? env[variable];
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value)) throw new InvalidConfigError(`--${name} (${variable}) must be a non-negative integer, got ${JSON.stringify(raw)}.`);
  return value;
}

/**
 * The logger of a one-shot command (migrate, prune, outbox): silent unless `LOG_LEVEL` is set,
 * so that stdout carries only the command's answer and errors are one line on stderr.
 */
export function commandLogger(env: Readonly<Record<string, string | undefined>>): Logger {
  return createLogger('effectively-cli', env['LOG_LEVEL'] ?? 'silent');
}
