/**
 * Lane leases: the outbox's rows are hashed by key into a fixed number of lanes
 * (`outbox_lanes`), and each lane is leased to one relay at a time. Relays share the lanes
 * evenly: each heartbeats in `outbox_relays`, takes free or expired lanes up to its fair share
 * and hands back any surplus (between its publish cycles, so a lane changes hands only with
 * nothing of it in flight). A relay that dies keeps its lanes until the lease runs out.
 */
import type { Logger } from '@effectively/core';
import { sql, type Kysely } from 'kysely';

/** What one {@link LaneLeases.rebalance} did. */
export interface RebalanceResult {
  owned: number[];
  acquired: number[];
  released: number[];
  liveRelays: number;
}

export class LaneLeases {
  private ownedLanes: number[] = [];

  constructor(
    private readonly db: Kysely<unknown>,
    private readonly schema: string,
    readonly relayId: string,
    private readonly leaseMs: number,
    private readonly log: Logger,
  ) {}

  /** Lanes held at the last rebalance, ascending. */
  get owned(): readonly number[] {
    return this.ownedLanes;
  }

  /** Forgets lanes found taken by another relay during a claim. */
  lost(lanes: readonly number[]): void {
    if (lanes.length === 0) return;
    const gone = new Set(lanes);
    this.ownedLanes = this.ownedLanes.filter((l) => !gone.has(l));
    this.log.warn({ lanes }, 'lanes were taken over by another relay (this relay stalled past its lease)');
  }

  /**
   * Heartbeats, renews this relay's leases, then hands back surplus lanes or takes free and
   * expired ones up to its share (`ceil(lanes / live relays)`). One short transaction.
   */
  async rebalance(): Promise<RebalanceResult> {
    const lanes = sql.id(this.schema, 'outbox_lanes');
    const relays = sql.id(this.schema, 'outbox_relays');
    const lease = sql`now() + ${this.leaseMs}::float8 * interval '1 millisecond'`;
    const me = this.relayId;
    const result = await this.db.transaction().execute(async (trx) => {
      await sql`SELECT set_config('lock_timeout', '2s', true)`.execute(trx);
      await sql`INSERT INTO ${relays} (relay_id) VALUES (${me}) ON CONFLICT (relay_id) DO UPDATE SET heartbeat_at = now()`.execute(trx);
      // SKIP LOCKED: two relays back from a long outage must not deadlock deleting each other's row.
      await sql`
        DELETE FROM ${relays} WHERE relay_id IN (
          SELECT relay_id FROM ${relays} WHERE relay_id <> ${me} AND heartbeat_at < now() - ${this.leaseMs * 3}::float8 * interval '1 millisecond'
          FOR UPDATE SKIP LOCKED)`.execute(trx);
      const counts = await sql<{ live: string; total: string }>`
        SELECT (SELECT count(*) FROM ${relays} WHERE heartbeat_at > now() - ${this.leaseMs}::float8 * interval '1 millisecond') AS live,
               (SELECT count(*) FROM ${lanes}) AS total`.execute(trx);
      const live = Math.max(1, Number(counts.rows[0]?.live ?? 1));
      const total = Number(counts.rows[0]?.total ?? 0);
      const share = Math.ceil(total / live);
      const renewed = await sql<{ lane: number }>`UPDATE ${lanes} SET lease_until = ${lease} WHERE owner = ${me} RETURNING lane`.execute(trx);
      const owned = renewed.rows.map((r) => r.lane).sort((a, b) => a - b);
      let acquired: number[] = [];
      let released: number[] = [];
      if (owned.length > share) {
        released = owned.slice(share);
        await sql`UPDATE ${lanes} SET owner = NULL, lease_until = '-infinity' WHERE owner = ${me} AND lane = ANY(${released}::int[])`.execute(trx);
      } else if (owned.length < share) {
        const taken = await sql<{ lane: number }>`
          UPDATE ${lanes} SET owner = ${me}, lease_until = ${lease}, epoch = epoch + 1
          WHERE lane IN (
            SELECT lane FROM ${lanes} WHERE owner IS NULL OR lease_until < now()
            ORDER BY random() LIMIT ${share - owned.length} FOR UPDATE SKIP LOCKED)
          RETURNING lane`.execute(trx);
        acquired = taken.rows.map((r) => r.lane).sort((a, b) => a - b);
      }
      const releasedSet = new Set(released);
      return { owned: [...owned.filter((l) => !releasedSet.has(l)), ...acquired].sort((a, b) => a - b), acquired, released, liveRelays: live };
    });
    this.ownedLanes = result.owned;
    if (result.acquired.length > 0 || result.released.length > 0) {
      this.log.info({ acquired: result.acquired, released: result.released, owned: result.owned.length, liveRelays: result.liveRelays }, 'outbox lanes rebalanced');
    }
    return result;
  }

  /** Hands back every lane and removes this relay's heartbeat (on a clean stop). */
  async releaseAll(): Promise<void> {
    const me = this.relayId;
    await this.db.transaction().execute(async (trx) => {
      await sql`UPDATE ${sql.id(this.schema, 'outbox_lanes')} SET owner = NULL, lease_until = '-infinity' WHERE owner = ${me}`.execute(trx);
      await sql`DELETE FROM ${sql.id(this.schema, 'outbox_relays')} WHERE relay_id = ${me}`.execute(trx);
    });
    this.ownedLanes = [];
  }
}
