import type { Migration } from 'kysely';
import { initial } from './0001-initial';
import { consumerAndOutbox } from './0002-consumer-and-outbox';
import { idempotencyKeys } from './0003-idempotency-keys';
import { outboxLanes } from './0004-outbox-lanes';
import { idOriginAndRedrive } from './0006-id-origin-and-redrive';
import { consumerAttempts } from './0007-consumer-attempts';
import { dedupGenerations } from './0008-dedup-generations';
import { dedupGateProbes } from './0009-dedup-gate-probes';

export { OUTBOX_LANES } from './0004-outbox-lanes';

/** Name of the table that records which migrations have run, inside the target schema. */
export const MIGRATION_TABLE = 'effectively_migrations';
/** Name of Kysely's migration lock table, inside the target schema. */
export const MIGRATION_LOCK_TABLE = 'effectively_migrations_lock';

/** A migration parameterised by the schema it creates its objects in. */
export type SchemaMigration = (schema: string) => Migration;

/**
 * The ordered migrations. Names sort in the order they must run; never rename or edit one
 * that has shipped, add a new one instead.
 */
export const MIGRATIONS: ReadonlyArray<readonly [name: string, migration: SchemaMigration]> = [
  ['0001-initial', initial],
  ['0002-consumer-and-outbox', consumerAndOutbox],
  ['0003-idempotency-keys', idempotencyKeys],
  ['0004-outbox-lanes', outboxLanes],
  ['0006-id-origin-and-redrive', idOriginAndRedrive],
  ['0007-consumer-attempts', consumerAttempts],
  ['0008-dedup-generations', dedupGenerations],
  ['0009-dedup-gate-probes', dedupGateProbes],
];

/** The migrations bound to `schema`, in the shape Kysely's `Migrator` expects. */
export function migrationsFor(schema: string): Record<string, Migration> {
  return Object.fromEntries(MIGRATIONS.map(([name, m]) => [name, m(schema)]));
}
