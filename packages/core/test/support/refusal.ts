import type { TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { InvalidConfigError, type Outbox, type OutboxMessage } from '../../src';

/**
 * In one transaction: `publish(message)` is refused with an InvalidConfigError whose message
 * matches `field`, and a publish after it (event id `id`) still commits; checks the row is there.
 */
export async function expectRefusedThenUsable(s: TestSchema, outbox: Outbox, message: unknown, field: RegExp | string, id: string): Promise<void> {
  await s.db.transaction().execute(async (trx) => {
    const error = await outbox.publish(trx, message as OutboxMessage).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidConfigError);
    expect((error as Error).message).toMatch(field);
    await outbox.publish(trx, { topic: 't', key: 'k', value: { after: id }, eventId: id });
  });
  const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(s.schema, 'outbox')} WHERE event_id = ${id}`.execute(s.db);
  expect(Number(rows[0]?.n)).toBe(1);
}
