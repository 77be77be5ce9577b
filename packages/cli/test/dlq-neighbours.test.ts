import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { createTestSchema, createTopics, produceMessages, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';

const bin = path.join(__dirname, '..', 'src', 'bin.ts');

function cli(args: string[], env: Record<string, string>): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 90_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `effectively dlq list|replay` with bad or unusual input: refused clearly (exit 2) or harmless. */
describe('effectively dlq: neighbours of bad input', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  const env = { DATABASE_URL: databaseUrl, KAFKA_BROKERS: brokers.join(',') };
  let s: TestSchema;
  let topic: string;
  let dlq: string;
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'cli_dlq_nbr');
    [topic, dlq] = (await createTopics(kafka, [
      { prefix: 'cli_nbr', partitions: 1 },
      { prefix: 'cli_nbr_dlq', partitions: 1 },
    ])) as [string, string];
    await produceMessages(kafka, dlq, [
      { key: 'k1', value: '{"amount":1}', headers: { 'dlq-group': 'billing', 'dlq-original-topic': topic, 'dlq-original-partition': '0', 'dlq-original-offset': '4', 'dlq-attempts': '5', 'event-id': 'dlq:own-id', 'dlq-reason': 'handler-failed', 'dlq-error': 'Error: bug', 'dlq-event-id': 'order-1', 'dlq-event-id-origin': 'producer' } },
    ]);
  });
  afterAll(async () => s?.drop());

  const outboxCount = async (): Promise<number> => Number((await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(s.schema, 'outbox')}`.execute(s.db)).rows[0]?.n);

  it('a dead-letter topic that does not exist is refused, naming it (exit 2), for list and replay', async () => {
    const missing = uniqueName('no_such_dlq');
    const list = cli(['dlq', 'list', '--dlq-topic', missing], env);
    expect(list.code).toBe(2);
    expect(list.stderr).toContain(missing);
    const replay = cli(['dlq', 'replay', '--schema', s.schema, '--dlq-topic', missing, '--execute'], env);
    expect(replay.code).toBe(2);
    expect(replay.stderr).toContain(missing);
    expect(await outboxCount()).toBe(0);
  });

  it('an original --topic no dead letter names: nothing listed, nothing replayed, exit 0', async () => {
    expect(cli(['dlq', 'list', '--dlq-topic', dlq, '--topic', 'no-such-topic'], env)).toMatchObject({ code: 0, stdout: '' });
    const run = cli(['dlq', 'replay', '--schema', s.schema, '--dlq-topic', dlq, '--topic', 'no-such-topic', '--execute'], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/replayed 0 dead letter\(s\): 0 row\(s\)/);
    expect(await outboxCount()).toBe(0);
  });

  it.each([
    [['--since', 'yesterday'], /--since must be an ISO 8601 time/],
    [['--until', '2026-13-45T00:00:00Z'], /--until must be an ISO 8601 time/],
    [['--since', '1'], /--since must be an ISO 8601 time/],
    [['--since', ''], /--since must be an ISO 8601 time/],
    [['--since', '2026-12-01T00:00:00Z', '--until', '2026-11-01T00:00:00Z'], /--since .* is not before --until/],
    [['--since', '2026-12-01T00:00:00Z', '--until', '2026-12-01T00:00:00Z'], /--since .* is not before --until/],
  ])('a bad time range %j is refused with exit 2 and nothing replayed', async (args, message) => {
    const list = cli(['dlq', 'list', '--dlq-topic', dlq, ...args], env);
    expect(list).toMatchObject({ code: 2, stdout: '' });
    expect(list.stderr).toMatch(message);
    const replay = cli(['dlq', 'replay', '--schema', s.schema, '--dlq-topic', dlq, '--execute', ...args], env);
    expect(replay.code).toBe(2);
    expect(await outboxCount()).toBe(0);
  });

  it('--execute twice is --execute once; an empty --redrive-id is refused', async () => {
    expect(cli(['dlq', 'replay', '--schema', s.schema, '--dlq-topic', dlq, '--execute', '--redrive-id', ''], env)).toMatchObject({ code: 2, stderr: expect.stringMatching(/redrive/i) });
    expect(await outboxCount()).toBe(0);
    const run = cli(['dlq', 'replay', '--schema', s.schema, '--dlq-topic', dlq, '--execute', '--execute', '--redrive-id', 'twice'], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/replayed 1 dead letter\(s\): 1 row\(s\) written to the outbox, redrive id twice/);
    expect(await outboxCount()).toBe(1);
  });
});
