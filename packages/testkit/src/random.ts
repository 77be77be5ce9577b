import { randomBytes } from 'node:crypto';

/** A seeded pseudo-random generator (mulberry32) returning floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A name unique to this run and call, safe as a Kafka topic, consumer group and Postgres
 * identifier: lower-case, `[a-z0-9_]`, at most 50 characters.
 */
export function uniqueName(prefix: string): string {
  const clean = prefix.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 30) || 't';
  return `${/^[a-z]/.test(clean) ? '' : 't_'}${clean}_${randomBytes(5).toString('hex')}`;
}
