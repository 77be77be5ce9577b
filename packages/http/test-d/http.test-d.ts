// Compiled by `npm run typecheck`, never run: idempotent handlers write through the user's own Kysely<DB>.
import type { Kysely } from 'kysely';
import { createDatabase, createOutbox } from '@effectively/core';
import { createIdempotency, idempotentExpress, idempotentFastify } from '@effectively/http';
import { expectType, type Equal, type OrderCreated, type UserDatabase } from '../../core/test-d/expect';

const { db } = createDatabase<UserDatabase>({ connectionString: 'postgres://localhost/test' });
const idempotency = createIdempotency({ db, schema: 'effectively' });
const outbox = createOutbox<{ 'orders.created': OrderCreated }>({ schema: 'effectively' });

idempotentExpress(idempotency, { scope: () => 'tenant' }, async (_req, { db: trx, key }) => {
  expectType<Equal<typeof trx, Kysely<UserDatabase>>>(true);
  await trx.insertInto('orders').values({ id: key ?? 'k', customer: 'c1', total_cents: 100 }).execute();
  // @ts-expect-error a table the user's database does not have
  await trx.insertInto('payments').values({ id: 'x' }).execute();
  await outbox.publish(trx, { topic: 'orders.created', value: { orderId: 'o1', totalCents: 100, lines: [] } });
  return { status: 201, json: { ok: true } };
});

idempotentFastify(idempotency, { scope: () => 'tenant' }, async (_request, { db: trx }) => {
  const rows = await trx.selectFrom('orders').select(['id', 'total_cents']).execute();
  expectType<Equal<typeof rows, Array<{ id: string; total_cents: number }>>>(true);
  return { status: 200, json: rows };
});
