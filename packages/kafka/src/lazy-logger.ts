import { childLogger, type Logger } from '@effectively/core';

const LEVELS = new Set<PropertyKey>(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);
const noop = (): void => undefined;

/**
 * `childLogger(parent, bindings)`, made only when something is logged through it: a chunk and
 * each event get a logger bound to their coordinates, and most of them never write a line (pino's
 * `child` and reading the parent's bindings cost more than the rest of a duplicate's handling).
 * A level the parent does not write is a no-op without making the child. Behaves as the child
 * in every other respect (properties, `child()`, `level`, `bindings()`).
 */
export function lazyChildLogger(parent: Logger, bindings: Record<string, unknown>): Logger {
  let real: Logger | undefined;
  const get = (): Logger => (real ??= childLogger(parent, bindings));
  return new Proxy(parent, {
    get(_target, property) {
      if (real === undefined) {
        // A child has its parent's level until it is given its own: answered without making it.
        if (LEVELS.has(property) && !parent.isLevelEnabled(property as string)) return noop;
        if (property === 'isLevelEnabled') return (level: string) => parent.isLevelEnabled(level);
        if (property === 'level') return parent.level;
      }
      const target = get();
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
    set(_target, property, value) {
      return Reflect.set(get(), property, value);
    },
    has(_target, property) {
      return Reflect.has(get(), property);
    },
  });
}
