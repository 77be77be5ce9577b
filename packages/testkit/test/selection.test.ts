import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { ServiceStartError, InvalidConfigError } from '@effectively/core';
import { startKafka, startPostgres, startLocalBroker, testKafka, freePort, type RunningKafka, type RunningPostgres } from '../src';
import { Client } from 'pg';

const noDocker = async (): Promise<boolean> => false;

describe('service selection order', () => {
  it('an address in the environment wins over everything else', async () => {
    const kafka = await startKafka({ env: { KAFKA_BROKERS: '10.0.0.9:9092, 10.0.0.10:9093' }, dockerAvailable: async () => true });
    expect(kafka.source).toBe('env');
    expect(kafka.brokers).toEqual(['10.0.0.9:9092', '10.0.0.10:9093']);
    await kafka.stop();
    const pg = await startPostgres({ env: { DATABASE_URL: 'postgres://u@db.example:5432/x' }, dockerAvailable: async () => true });
    expect(pg.source).toBe('env');
    expect(pg.url).toBe('postgres://u@db.example:5432/x');
  });

  it('refuses malformed addresses with a hint', async () => {
    await expect(startKafka({ env: { KAFKA_BROKERS: 'http://x' } })).rejects.toThrow(InvalidConfigError);
    await expect(startPostgres({ env: { DATABASE_URL: 'mysql://x' } })).rejects.toThrow(/postgres:\/\//);
  });

  it('falls back to a local JVM broker and embedded Postgres when nothing else is there', async () => {
    const settled = await Promise.allSettled([startKafka({ env: {}, dockerAvailable: noDocker, heap: '384m' }), startPostgres({ env: {}, dockerAvailable: noDocker })]);
    const [kafka, pg] = settled.map((s) => { if (s.status === 'rejected') throw s.reason; return s.value; }) as [RunningKafka, RunningPostgres];
    try {
      expect(kafka.source).toBe('local');
      expect(kafka.version).toMatch(/^\d+\.\d+\.\d+$/);
      const admin = testKafka(kafka.brokers).admin();
      await admin.connect();
      expect((await admin.describeCluster()).brokers).toHaveLength(1);
      await admin.disconnect();

      expect(pg.source).toBe('local');
      const client = new Client({ connectionString: pg.url });
      await client.connect();
      const { rows } = await client.query<{ v: string }>('SELECT current_setting($$server_version$$) AS v');
      expect(rows[0]?.v).toMatch(/^\d+/);
      await client.end();
    } finally {
      await Promise.all([kafka.stop(), pg.stop()]);
    }
    // Stopped means gone: the port no longer answers.
    const port = Number(kafka.brokers[0]?.split(':')[1]);
    await expect(
      new Promise((resolve, reject) => net.connect(port, '127.0.0.1').on('connect', resolve).on('error', reject)),
    ).rejects.toThrow();
  });
});

describe('a broker that cannot start says why, fast', () => {
  it('names Java when there is no Java', async () => {
    const error = await startLocalBroker({ javaCommand: '/nonexistent/bin/java' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ServiceStartError);
    expect((error as ServiceStartError).missing).toBe('java');
    expect((error as Error).message).toMatch(/Java was not found/);
  });

  it('names Maven when there is no Maven and nothing cached', async () => {
    const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'effectively-nocache-'));
    const error = await startLocalBroker({ mvnCommand: '/nonexistent/bin/mvn', cacheDir }).catch((e: unknown) => e);
    fs.rmSync(cacheDir, { recursive: true, force: true });
    expect(error).toBeInstanceOf(ServiceStartError);
    expect((error as ServiceStartError).missing).toBe('maven');
    expect((error as Error).message).toMatch(/Maven was not found/);
  });

  it('names the port when the port is taken', async () => {
    const port = await freePort();
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    try {
      const error = await startLocalBroker({ port }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ServiceStartError);
      expect((error as ServiceStartError).missing).toBe('port');
      expect((error as Error).message).toContain(String(port));
    } finally {
      server.close();
    }
  });
});
