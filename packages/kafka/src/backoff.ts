/** Exponential backoff with full jitter: attempt 1 waits about `base`, doubling up to `max`. */
export function backoffMs(attempt: number, base: number, max: number, random: () => number = Math.random): number {
  const ceiling = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Sleeps `ms`, calling `tick` about every `everyMs` (e.g. a Kafka heartbeat), stopping early when `cancelled()` says so. */
export async function sleepWithTicks(ms: number, everyMs: number, tick: () => Promise<void>, cancelled: () => boolean): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until && !cancelled()) {
    await new Promise((r) => setTimeout(r, Math.min(everyMs, until - Date.now())));
    await tick().catch(() => undefined);
  }
}
