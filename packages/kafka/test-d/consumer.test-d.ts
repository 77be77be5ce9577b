// Compiled by `npm run typecheck`, never run: handlers get the user's own Transaction<DB>.
import type { Kysely, Transaction } from 'kysely';
import { createDatabase, type Outbox } from '@effectively/core';
import { IdempotentConsumer, pruneProcessedEvents, type ConsumedEvent, type HandlerContext } from '@effectively/kafka';
import { expectType, type Equal, type OrderCreated, type UserDatabase } from '../../core/test-d/expect';

const { db } = createDatabase<UserDatabase>({ connectionString: 'postgres://localhost/test' });
const base = { brokers: ['127.0.0.1:9092'], groupId: 'orders', topics: ['orders'], schema: 'effectively' };

// Both type arguments given: the handler's trx is Transaction<UserDatabase>.
new IdempotentConsumer<OrderCreated, UserDatabase>({
  ...base,
  db,
  handler: async (event, { trx, outbox }) => {
    expectType<Equal<typeof trx, Transaction<UserDatabase>>>(true);
    expectType<Equal<typeof event.value, OrderCreated>>(true);
    await trx.insertInto('orders').values({ id: event.value.orderId, customer: 'c1', total_cents: event.value.totalCents }).execute();
    await trx.insertInto('order_lines').values(event.value.lines.map((l) => ({ order_id: event.value.orderId, ...l }))).execute();
    // @ts-expect-error a table the user's database does not have
    await trx.insertInto('ordres').values({ id: 'x' }).execute();
    // @ts-expect-error a column the table does not have
    await trx.insertInto('orders').values({ id: 'x', customer: 'c', total_cents: 1, discount: 2 }).execute();
    await outbox.publish(trx, { topic: 'orders.accepted', key: event.value.orderId, value: event.value });
    const typed: Outbox<{ 'orders.accepted': OrderCreated }> = outbox;
    // @ts-expect-error a typed view of ctx.outbox refuses other topics
    await typed.publish(trx, { topic: 'orders.rejected', value: event.value });
  },
  batchHandler: async (events, { trx }) => {
    expectType<Equal<typeof trx, Transaction<UserDatabase>>>(true);
    await trx.insertInto('orders').values(events.map((e) => ({ id: e.value.orderId, customer: 'c1', total_cents: e.value.totalCents }))).execute();
  },
});

// No type arguments: both inferred, T from the handler's annotation and DB from db.
const _inferred = new IdempotentConsumer({
  ...base,
  db,
  handler: async (event: ConsumedEvent<OrderCreated>, { trx }: HandlerContext<UserDatabase>) => {
    await trx.updateTable('orders').set({ total_cents: event.value.totalCents }).where('id', '=', event.value.orderId).execute();
  },
});
expectType<Equal<typeof _inferred, IdempotentConsumer<OrderCreated, UserDatabase>>>(true);

// Only the event type given: DB stays unknown, so a typed db must be named too.
// @ts-expect-error TypeScript infers no type argument once one is given: name DB as well
new IdempotentConsumer<OrderCreated>({ ...base, db, handler: async () => {} });

// An untyped Kysely still works, as before.
declare const untypedDb: Kysely<unknown>;
new IdempotentConsumer<OrderCreated>({ ...base, db: untypedDb, handler: async (_event, { trx: _trx }) => expectType<Equal<typeof _trx, Transaction<unknown>>>(true) });

// A handler written for another database is refused.
interface OtherDatabase { invoices: { id: string } }
new IdempotentConsumer<OrderCreated, UserDatabase>({
  ...base,
  db,
  // @ts-expect-error the handler expects Transaction<OtherDatabase>
  handler: async (_event, _ctx: HandlerContext<OtherDatabase>) => {},
});

void pruneProcessedEvents(db, { schema: 'effectively', olderThanMs: 86_400_000 });
