import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { createTestSchema, createTopics, produceMessages, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';

const bin = path.join(__dirname, '..', 'src', 'bin.ts');

function cli(args: string[], env: Record<string, string>): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 90_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `effectively dlq list|replay` against dead letters written as the consumer writes them. */
describe('effectively dlq', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const env = { DATABASE_URL: databaseUrl, KAFKA_BROKERS: brokers.join(',') };
  let s: TestSchema;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'cli_dlq');
  });
  afterAll(async () => s?.drop());

  it('lists and filters dead letters, replays through the outbox only with --execute', async () => {
    const [topic, dlq] = (await createTopics(kafka, [
      { prefix: 'cli_orders', partitions: 1 },
      { prefix: 'cli_orders_dlq', partitions: 1 },
    ])) as [string, string];
    const common = { 'dlq-group': 'billing', 'dlq-original-topic': topic, 'dlq-original-partition': '0', 'dlq-attempts': '5', 'event-id': 'dlq:own-id' };
    await produceMessages(kafka, dlq, [
      { key: 'k1', value: '{"amount":1}', headers: { ...common, 'dlq-reason': 'handler-failed', 'dlq-error': 'Error: bug', 'dlq-event-id': 'order-1', 'dlq-event-id-origin': 'producer', 'dlq-original-offset': '4', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } },
      { key: 'k2', value: '{"amount":2}', headers: { ...common, 'dlq-reason': 'invalid-event-id', 'dlq-error': 'missing', 'dlq-event-id': `invalid:${topic}/0/5`, 'dlq-event-id-origin': 'derived', 'dlq-original-offset': '5' } },
    ]);

    const all = cli(['dlq', 'list', '--dlq-topic', dlq], env);
    expect(all.code).toBe(0);
    const rows = all.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows.map((r) => [r.eventId, r.reason, r.topic, r.originalOffset, r.group, r.key])).toEqual([
      ['order-1', 'handler-failed', topic, '4', 'billing', 'k1'],
      [`invalid:${topic}/0/5`, 'invalid-event-id', topic, '5', 'billing', 'k2'],
    ]);
    const filtered = cli(['dlq', 'list', '--dlq-topic', dlq, '--reason', 'handler-failed', '--group', 'billing'], env);
    expect(filtered.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { eventId: string }).eventId)).toEqual(['order-1']);
    expect(cli(['dlq', 'list', '--dlq-topic', dlq, '--since', '2999-01-01T00:00:00Z'], env)).toMatchObject({ code: 0, stdout: '' });

    const outboxRows = async (): Promise<Array<{ event_id: string; topic: string; key: string; headers: Record<string, string> }>> =>
      (await sql<{ event_id: string; topic: string; key: string; headers: Record<string, string> }>`
        SELECT event_id, topic, convert_from(message_key, 'UTF8') AS key, headers FROM ${sql.id(s.schema, 'outbox')} ORDER BY id`.execute(s.db)).rows;

    const dry = cli(['dlq', 'replay', '--schema', s.schema, '--dlq-topic', dlq], env);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/dry run: would replay 1 dead letter\(s\) with redrive id \S+; add --execute/);
    expect(dry.stderr).toMatch(/skipped invalid:.*no producer event id/);
    expect(await outboxRows()).toEqual([]);

    const run = cli(['dlq', 'replay', '--schema', s.schema, '--dlq-topic', dlq, '--execute', '--redrive-id', 'replay-1'], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/replayed 1 dead letter\(s\): 1 row\(s\) written to the outbox, redrive id replay-1/);
    const written = await outboxRows();
    expect(written).toEqual([{ event_id: 'order-1', topic, key: 'k1', headers: expect.objectContaining({ 'effectively-redrive': 'replay-1', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }) }]);
    expect(Object.keys(written[0]?.headers ?? {}).filter((h) => h.startsWith('dlq-'))).toEqual([]);

    expect(cli(['dlq', 'list'], env)).toMatchObject({ code: 2, stderr: expect.stringMatching(/--dlq-topic/) });
    expect(cli(['dlq', 'replay', '--dlq-topic', dlq], env)).toMatchObject({ code: 2, stderr: expect.stringMatching(/--schema is required/) });
  });
});
