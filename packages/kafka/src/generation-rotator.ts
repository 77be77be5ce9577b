import type { Kysely } from 'kysely';
import type { Logger, Metrics } from '@effectively/core';
import { readGenerations, rotateProcessedEvents } from './generations';

/** What {@link startGenerationRotator} needs. */
export interface GenerationRotatorSettings {
  db: Kysely<unknown>;
  schema: string;
  groupId: string;
  metrics: Metrics;
  logger: Logger;
  /** Whether to rotate (false: only report the metrics). */
  rotate: boolean;
  /** Whether this consumer claims on generations now (it may switch while running). */
  active: () => boolean;
}

/**
 * While the schema's retention is by generations: every quarter of the rotation interval (at
 * most every minute, at least every 100 ms) runs {@link rotateProcessedEvents} (when `rotate`)
 * and reports `dedup_live_generations` and `dedup_last_rotation_timestamp_seconds`. A failed
 * rotation (e.g. its lock wait timed out behind a long transaction) is logged at warn and tried
 * again at the next tick; claims never wait for it beyond its lock time-out.
 */
export function startGenerationRotator(s: GenerationRotatorSettings): { stop(): Promise<void> } {
  const labels = { group: s.groupId };
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = async (): Promise<void> => {
    let next = 60_000;
    try {
      if (!s.active()) {
        s.metrics.set('dedup_live_generations', 0, labels);
        s.metrics.set('dedup_last_rotation_timestamp_seconds', 0, labels);
        next = 5_000;
      } else {
      if (s.rotate) {
        const r = await rotateProcessedEvents(s.db, { schema: s.schema });
        s.metrics.increment('dedup_rotations_total', { ...labels, result: r.rotated ? 'rotated' : r.postponed !== undefined ? 'postponed' : 'not_due' });
        if (r.forgotten.length + (r.legacyForgotten ? 1 : 0) > 0) s.metrics.increment('dedup_generations_forgotten_total', labels, r.forgotten.length + (r.legacyForgotten ? 1 : 0));
        if (r.rotated || r.forgotten.length > 0 || r.legacyForgotten) s.logger.info({ generation: r.currentGeneration, forgotten: r.forgotten, legacyForgotten: r.legacyForgotten }, 'dedup generations rotated');
        if (r.postponed !== undefined) s.logger.warn({ generation: r.currentGeneration }, `dedup rotation postponed: ${r.postponed}`);
      }
      const state = await readGenerations(s.db, { schema: s.schema });
      s.metrics.set('dedup_live_generations', state.live.length, labels);
      if (state.rotatedAt !== null) s.metrics.set('dedup_last_rotation_timestamp_seconds', state.rotatedAt.getTime() / 1000, labels);
      next = Math.max(100, Math.min(60_000, Math.floor((state.intervalMs ?? 240_000) / 4)));
      }
    } catch (error) {
      if (s.rotate) s.metrics.increment('dedup_rotations_total', { ...labels, result: 'failed' });
      s.logger.warn({ err: error }, 'dedup generation rotation failed; trying again at the next tick');
      next = 5_000;
    }
    if (!stopped) {
      timer = setTimeout(() => void (running = tick()), next);
      timer.unref();
    }
  };
  for (const result of ['rotated', 'not_due', 'postponed', 'failed']) s.metrics.increment('dedup_rotations_total', { ...labels, result }, 0);
  s.metrics.increment('dedup_generations_forgotten_total', labels, 0);
  running = tick();
  return {
    async stop(): Promise<void> {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}
