// Compiled by `npm run typecheck`, never run: the types a Kysely user relies on.
import type { Kysely, Transaction } from 'kysely';
import { createDatabase, createOutbox, createOutboxBuffer, migrate, type Database, type Outbox, type OutboxMessage, type PublishResult } from '@effectively/core';
import { expectType, type Equal, type OrderCreated, type UserDatabase } from './expect';

declare const trx: Transaction<UserDatabase>;
declare const created: OrderCreated;

// createDatabase<DB> gives the user's Kysely<DB>; migrate takes it as it is.
const database = createDatabase<UserDatabase>({ connectionString: 'postgres://localhost/test' });
expectType<Equal<typeof database, Database<UserDatabase>>>(true);
expectType<Equal<typeof database.db, Kysely<UserDatabase>>>(true);
void migrate(database.db, { schema: 'effectively' });

// publish takes the user's Kysely<DB> and Transaction<DB>, and interface-typed values.
const outbox = createOutbox({ schema: 'effectively' });
expectType<Equal<ReturnType<typeof outbox.publish<UserDatabase>>, Promise<PublishResult>>>(true);
void outbox.publish(database.db, { topic: 'orders.created', key: created.orderId, value: created });
void outbox.publish(trx, [{ topic: 'orders.created', value: created }, { topic: 'raw', value: Buffer.from('x') }, { topic: 'gone', value: null }]);
const message: OutboxMessage<OrderCreated> = { topic: 'orders.created', value: created };
void outbox.publish(trx, message);
// @ts-expect-error undefined is not a value (null is the tombstone)
void outbox.publish(trx, { topic: 'orders.created', value: undefined });
// @ts-expect-error a message needs a topic
void outbox.publish(trx, { value: created });

// A typed outbox: only its topics, each with its value type.
type OrderTopics = { 'orders.created': OrderCreated; 'orders.cancelled': { orderId: string; reason: string } };
const orders = createOutbox<OrderTopics>({ schema: 'effectively' });
void orders.publish(trx, { topic: 'orders.created', key: created.orderId, value: created });
void orders.publish(trx, [{ topic: 'orders.created', value: created }, { topic: 'orders.cancelled', value: { orderId: 'o1', reason: 'fraud' } }]);
// @ts-expect-error the value does not match the topic's type
void orders.publish(trx, { topic: 'orders.cancelled', value: created });
// @ts-expect-error a topic the outbox does not know
void orders.publish(trx, { topic: 'orders.shipped', value: created });
// An untyped outbox (e.g. the consumer's ctx.outbox) can be used as a typed one.
const plain: Outbox = createOutbox();
const typedView: Outbox<OrderTopics> = plain;
void typedView;

// The buffer: typed the same way; flush takes the user's transaction.
const buffer = createOutboxBuffer<OrderTopics>({ schema: 'effectively' });
void buffer.outbox.publish(trx, { topic: 'orders.created', value: created });
void buffer.flush(trx);
void buffer.flush(database.db);
