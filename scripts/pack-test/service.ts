/**
 * A small orders service built only from the installed tarballs: an idempotent consumer that
 * stores orders and emits receipts through the outbox, the relay that publishes them, and an
 * Express endpoint with idempotency keys. Compiled with strict, exactOptionalPropertyTypes and
 * noPropertyAccessFromIndexSignature, once as CommonJS and once as ESM (nodenext). Typed as a
 * Kysely user types a service: its own database type (the handler's trx is Transaction<DB>,
 * `insertInto('orders')` checked) and an interface as the outbox message type.
 */
import { createDatabase, createLogger, migrate, PrometheusMetrics, type Outbox } from '@effectively/core';
import { IdempotentConsumer, consumerPrometheusMetrics, type ConsumedEvent } from '@effectively/kafka';
import { createRelay, relayPrometheusMetrics } from '@effectively/relay';
import { createIdempotency, idempotentExpress, keepRawBody, IDEMPOTENCY_METRICS } from '@effectively/http';
import { MIGRATIONS } from '@effectively/migrations';
import { defineCommand, ExitCode } from '@effectively/cli';
import { uniqueName } from '@effectively/testkit';
import express from 'express';
import { Kafka, logLevel } from 'kafkajs';
import { sql, type Kysely, type Transaction } from 'kysely';
import { Registry } from 'prom-client';
import type { AddressInfo } from 'node:net';

interface Order {
  id: string;
  amount: number;
}

/** The service's tables, as kysely-codegen would describe them. */
interface ServiceDatabase {
  orders: { id: string; amount: number };
}

/** The message the service publishes: an interface (no index signature). */
interface Receipt {
  order: string;
  amount: number;
}

/** Receipts go to one topic whose name is chosen at run time. */
type ReceiptTopics = Record<string, Receipt>;

/** Never called: what the installed typings must refuse (an unused @ts-expect-error fails tsc). */
function refusedByTheTypes(trx: Transaction<ServiceDatabase>, db: Kysely<ServiceDatabase>, receipts: Outbox<ReceiptTopics>): void {
  // @ts-expect-error a table the service's database does not have
  void trx.insertInto('payments').values({ id: 'p1' }).execute();
  // @ts-expect-error a column the table does not have
  void db.insertInto('orders').values({ id: 'o1', amount: 1, discount: 2 }).execute();
  // @ts-expect-error a receipt without its amount
  void receipts.publish(trx, { topic: 'receipts', value: { order: 'o1' } });
  // @ts-expect-error undefined is not a value (null is the tombstone)
  void receipts.publish(db, { topic: 'receipts', value: undefined });
}
void refusedByTheTypes;

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`${name} is not set`);
  return value;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main(): Promise<void> {
  const databaseUrl = required('DATABASE_URL');
  const brokers = required('KAFKA_BROKERS').split(',');
  const schema = uniqueName(required('SERVICE_SCHEMA_PREFIX'));
  const [ordersTopic, receiptsTopic] = [`${schema}-orders`, `${schema}-receipts`];
  const log = createLogger('pack-test-service', 'warn');
  const { db, destroy } = createDatabase<ServiceDatabase>({ connectionString: databaseUrl, max: 5, logger: log });
  const kafka = new Kafka({ brokers, clientId: 'pack-test', logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const migrated = await migrate(db, { schema });
    if (migrated.applied.length !== MIGRATIONS.length) throw new Error(`expected ${MIGRATIONS.length} migrations, applied ${migrated.applied.length}`);
    await sql`CREATE TABLE ${sql.id(schema, 'orders')} (id text PRIMARY KEY, amount integer NOT NULL)`.execute(db);
    await admin.createTopics({ topics: [{ topic: ordersTopic, numPartitions: 2 }, { topic: receiptsTopic, numPartitions: 2 }], waitForLeaders: true });

    const registry = new Registry();
    const consumer = new IdempotentConsumer<Order, ServiceDatabase>({
      brokers,
      groupId: `${schema}-orders`,
      topics: [ordersTopic],
      db,
      schema,
      handler: async (event: ConsumedEvent<Order>, { trx, outbox }) => {
        const own: Transaction<ServiceDatabase> = trx;
        await own.withSchema(schema).insertInto('orders').values({ id: event.value.id, amount: event.value.amount }).execute();
        const receipt: Receipt = { order: event.value.id, amount: event.value.amount };
        const receipts: Outbox<ReceiptTopics> = outbox;
        await receipts.publish(trx, [{ eventId: `${event.id}:receipt`, topic: receiptsTopic, key: event.value.id, value: receipt }]);
      },
      logger: log,
      metrics: consumerPrometheusMetrics(registry),
    });
    const relay = createRelay({ brokers, db, databaseUrl, schema, logger: log, metrics: relayPrometheusMetrics(registry) });
    await consumer.start();
    await relay.start();

    // 20 orders, 5 of them sent twice.
    const producer = kafka.producer();
    await producer.connect();
    const orders: Order[] = Array.from({ length: 20 }, (_, i) => ({ id: `o${i}`, amount: i * 10 }));
    const messages = [...orders, ...orders.slice(0, 5)].map((o) => ({ key: o.id, value: JSON.stringify(o), headers: { 'event-id': `order-${o.id}` } }));
    await producer.send({ topic: ordersTopic, acks: -1, messages });
    await producer.disconnect();

    await until('20 receipts on Kafka', async () => (await admin.fetchTopicOffsets(receiptsTopic)).reduce((n, p) => n + Number(p.high), 0) >= 20);
    const stored = await db.withSchema(schema).selectFrom('orders').select(['id', 'amount']).execute();
    if (stored.length !== 20 || stored.reduce((sum, o) => sum + o.amount, 0) !== 1900) throw new Error(`expected 20 orders worth 1900, found ${JSON.stringify(stored)}`);
    await until('the consumer to count 5 duplicates', async () => consumer.stats.duplicates === 5);
    await consumer.stop();
    await relay.stop();

    // HTTP idempotency keys on Express.
    const idempotency = createIdempotency({ db, schema, metrics: new PrometheusMetrics(registry, IDEMPOTENCY_METRICS), logger: log });
    const app = express();
    let runs = 0;
    app.post(
      '/payments',
      express.json({ verify: keepRawBody }),
      idempotentExpress(idempotency, { scope: () => 'tenant-1' }, async () => {
        runs += 1;
        return { status: 201, json: { id: `p${runs}` } };
      }),
    );
    const server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    const { port } = server.address() as AddressInfo;
    const post = (): Promise<Response> => fetch(`http://127.0.0.1:${port}/payments`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': 'k-1' }, body: '{"amount":5}' });
    const first = await post();
    const second = await post();
    server.close();
    if (first.status !== 201 || second.status !== 201 || second.headers.get('idempotent-replayed') !== 'true' || runs !== 1) {
      throw new Error(`idempotency keys: ${first.status} ${second.status} replayed=${second.headers.get('idempotent-replayed')} runs=${runs}`);
    }
    const metrics = await registry.metrics();
    if (!/effectively_events_processed_total/.test(metrics)) throw new Error('consumer metrics missing');

    // The CLI's library surface: a command is one definition.
    const hello = defineCommand({ name: 'hello', summary: 'says hello', usage: '', options: {}, run: async () => ExitCode.ok });
    if (hello.name !== 'hello') throw new Error('defineCommand');
    process.stdout.write(`service ok: 20 orders (5 duplicates skipped), 20 receipts relayed, idempotency key replayed (schema ${schema})\n`);
  } finally {
    await admin.deleteTopics({ topics: [ordersTopic, receiptsTopic] }).catch(() => undefined);
    await admin.disconnect();
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db).catch(() => undefined);
    await destroy();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`service failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
