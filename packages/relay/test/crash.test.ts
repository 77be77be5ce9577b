import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createTestSchema, readTopic, testKafka, testServices, type TestSchema } from '@effectively/testkit';
import { countByStatus, enqueue, header, idsPerKey, makeMessages, outOfOrderKeys, rows, waitFor, newTopic } from './support/outbox';

const fixture = path.join(__dirname, 'fixtures', 'relay-child.ts');

function startChild(env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`relay child exited (${code}) before it was ready: ${stderr}`)));
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

describe('relay killed mid-stream', () => {
  const { brokers, databaseUrl } = testServices();
  const kafka = testKafka(brokers);
  let s: TestSchema;
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    s = await createTestSchema(databaseUrl, 'relay_crash');
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await s.drop();
  });

  it('SIGKILL while publishing, restart: every row published at least once, distinct event ids == rows, order per key kept (F32)', async () => {
    const topic = await newTopic(kafka, 'relay_crash', 3);
    const total = 3000;
    for (let t = 0; t < 30; t++) await enqueue(s.db, s.schema, makeMessages(topic, 100, 10, 'c', t * 100));
    const env = { DATABASE_URL: databaseUrl, KAFKA_BROKERS: brokers.join(','), SCHEMA: s.schema, BATCH_SIZE: '50' };

    const first = await startChild(env);
    children.push(first);
    await waitFor(() => countByStatus(s.db, s.schema), (c) => (c.published ?? 0) >= 300, 60_000);
    first.kill('SIGKILL');
    await exited(first);
    const atKill = await countByStatus(s.db, s.schema);
    expect(atKill.published ?? 0).toBeGreaterThanOrEqual(300);

    const second = await startChild(env);
    children.push(second);
    await waitFor(() => countByStatus(s.db, s.schema), (c) => c.published === total, 120_000);
    second.kill('SIGTERM');
    await exited(second);
    expect(second.exitCode).toBe(0);

    const all = await rows(s.db, s.schema);
    const messages = await readTopic(kafka, topic);
    const eventIds = messages.map((m) => header(m, 'event-id'));
    expect(eventIds.every((id) => id !== undefined)).toBe(true);
    expect(new Set(eventIds)).toEqual(new Set(all.map((x) => x.event_id)));
    expect(messages.length).toBeGreaterThanOrEqual(total);
    const perKey = idsPerKey(messages, new Map(all.map((x) => [x.event_id, x.id])));
    expect(outOfOrderKeys(perKey)).toEqual([]);
  });
});
