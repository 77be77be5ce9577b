// Compiled by `npm run typecheck`, never run: the relay and its tools take the user's Kysely<DB>.
import { createDatabase } from '@effectively/core';
import { createRelay, discardParked, listParked, OutboxRelay, outboxBacklog, pruneOutbox, requeueParked } from '@effectively/relay';
import { expectType, type Equal, type UserDatabase } from '../../core/test-d/expect';

const { db } = createDatabase<UserDatabase>({ connectionString: 'postgres://localhost/test' });

const _relay = createRelay({ brokers: ['127.0.0.1:9092'], db, databaseUrl: 'postgres://localhost/test', schema: 'effectively' });
expectType<Equal<typeof _relay, OutboxRelay<UserDatabase>>>(true);
new OutboxRelay({ brokers: ['127.0.0.1:9092'], db, listen: false });
void listParked(db, { schema: 'effectively' });
void requeueParked(db, { all: true }, { schema: 'effectively' });
void discardParked(db, { ids: ['1'] }, { schema: 'effectively' });
void outboxBacklog(db, 'effectively');
void pruneOutbox(db, { schema: 'effectively', olderThanMs: 1 });
// @ts-expect-error db must be a Kysely instance
createRelay({ brokers: ['127.0.0.1:9092'], db: 'postgres://localhost/test', listen: false });
