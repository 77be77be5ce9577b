import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createDatabase, nodeVersionAtLeast, PLATFORMATIC_KAFKA } from '@effectively/core';
import { createTestSchema, testKafka, testServices, uniqueName, type TestSchema } from '@effectively/testkit';
import { sql } from 'kysely';
import { kafkaConnection, relayClient } from '../src/settings';

const bin = path.join(__dirname, '..', 'src', 'bin.ts');
const version = (JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;

/** Runs the CLI in a child process with only the given variables (plus PATH). */
function cli(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 90_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function schemaExists(url: string, schema: string): Promise<boolean> {
  const database = createDatabase({ connectionString: url, max: 1 });
  try {
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM pg_namespace WHERE nspname = ${schema}`.execute(database.db);
    return Number(rows[0]?.n) > 0;
  } finally {
    await database.destroy();
  }
}

describe('effectively command line', () => {
  const { brokers, databaseUrl } = testServices();
  const env = { DATABASE_URL: databaseUrl, KAFKA_BROKERS: brokers.join(',') };

  it('prints its version and help, per command too, and runs nothing for --help', () => {
    expect(cli(['--version'])).toMatchObject({ code: 0, stdout: `${version}\n` });
    const help = cli(['--help']);
    expect(help.code).toBe(0);
    for (const command of ['migrate', 'relay', 'outbox', 'prune', 'smoke']) expect(help.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    expect(help.stdout).toMatch(/Exit codes: 0 .* 1 .* 2 /);
    // A database that does not answer: --help must not try it.
    const unreachable = { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', KAFKA_BROKERS: '127.0.0.1:1' };
    for (const args of [['migrate', '--help'], ['relay', '-h'], ['outbox', '--help'], ['outbox', 'requeue', '--help'], ['prune', '--schema', 'x', '--outbox', '1d', '--help'], ['smoke', '--help']]) {
      const r = cli(args, unreachable);
      expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: '' });
      expect(r.stdout).toMatch(/^usage: effectively /);
    }
    expect(cli(['relay', '--help']).stdout).toMatch(/KAFKA_SASL_MECHANISM/);
  });

  it('refuses unknown commands, flags, actions and missing values with one line on stderr and exit 2', () => {
    const cases: Array<[string[], RegExp]> = [
      [['frobnicate'], /unknown command "frobnicate"/],
      [['migrate', '--schema', 'x', '--bogus'], /Unknown option '--bogus'/],
      [['migrate', '--schema'], /--schema/],
      [['migrate', 'extra', '--schema', 'x'], /unexpected argument "extra"/],
      [['relay', '--schema', 'x', '--http-port', 'abc'], /--http-port .* non-negative integer/],
      [['relay', '--schema', 'x', '--client', 'rdkafka'], /--client must be one of kafkajs, platformatic/],
      // The platformatic client on a Node.js that cannot run it: refused before anything runs.
      ...(nodeVersionAtLeast(PLATFORMATIC_KAFKA.minNode ?? '0') ? [] : [[['relay', '--schema', 'x', '--client', 'platformatic'], /needs Node\.js ≥ 22\.22\.0 .*npm install @platformatic\/kafka/] as [string[], RegExp]]),
      [['outbox'], /needs an action/],
      [['outbox', 'frobnicate'], /unknown outbox action/],
      [['prune', '--schema', 'x'], /at least one of/],
      [['prune', '--schema', 'x', '--outbox', '7 days'], /duration like/],
      [['migrate', '--schema', 'Robert"); DROP TABLE students;--'], /not a safe identifier/],
    ];
    for (const [args, message] of cases) {
      const r = cli(args, env);
      expect({ args, code: r.code, lines: r.stderr.trim().split('\n').length }).toEqual({ args, code: 2, lines: 1 });
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
    }
  });

  it('requires --schema wherever a schema is created or changed, and creates nothing without it', async () => {
    const schema = uniqueName('cli_noschema');
    for (const args of [['migrate'], ['relay'], ['prune', '--outbox', '7d'], ['outbox', 'requeue', '--all'], ['outbox', 'discard', '--all'], ['outbox', 'parked']]) {
      const r = cli(args, env);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(/--schema is required/);
    }
    // EFFECTIVELY_SCHEMA names it too.
    const migrated = cli(['migrate'], { ...env, EFFECTIVELY_SCHEMA: schema });
    expect(migrated).toMatchObject({ code: 0, stderr: '' });
    expect(migrated.stdout).toMatch(new RegExp(`schema ${schema}: applied 0001`));
    expect(cli(['migrate', '--schema', schema], env).stdout).toBe(`schema ${schema}: up to date\n`);
    expect(await schemaExists(databaseUrl, schema)).toBe(true);
    const database = createDatabase({ connectionString: databaseUrl, max: 1 });
    await sql`DROP SCHEMA ${sql.id(schema)} CASCADE`.execute(database.db);
    await database.destroy();
  });

  it('reads the database, schema and Kafka settings from a --config file', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'effectively-cli-'));
    const schema = uniqueName('cli_config');
    const file = path.join(dir, 'effectively.json');
    writeFileSync(file, JSON.stringify({ databaseUrl, schema, kafka: { brokers } }));
    expect(cli(['migrate', '--config', file])).toMatchObject({ code: 0, stderr: '' });
    expect(await schemaExists(databaseUrl, schema)).toBe(true);
    writeFileSync(file, JSON.stringify({ databaseUrl, schema, kafka: { brokers, tls: true } }));
    const refused = cli(['migrate', '--config', file]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/unknown key "tls"; allowed: brokers, clientId, client, ssl, sasl/);
    const database = createDatabase({ connectionString: databaseUrl, max: 1 });
    await sql`DROP SCHEMA ${sql.id(schema)} CASCADE`.execute(database.db);
    await database.destroy();
  });

  it('builds kafkajs TLS and SASL settings from the environment, over the config file', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'effectively-tls-'));
    for (const name of ['ca.pem', 'client.pem', 'client.key', 'password']) writeFileSync(path.join(dir, name), `${name} contents\n`);
    const file = { kafka: { brokers: ['file:9093'], clientId: 'from-file', ssl: { ca: path.join(dir, 'ca.pem') }, sasl: { mechanism: 'plain' as const, username: 'file-user', passwordFile: path.join(dir, 'password') } } };
    expect(kafkaConnection({}, {}, file)).toEqual({
      brokers: ['file:9093'],
      clientId: 'from-file',
      settings: { ssl: { ca: 'ca.pem contents\n' }, sasl: { mechanism: 'plain', username: 'file-user', password: 'password contents' } },
    });
    const env = {
      KAFKA_BROKERS: 'a:9093, b:9093',
      KAFKA_CLIENT_ID: 'orders-relay',
      KAFKA_SSL_CERT: path.join(dir, 'client.pem'),
      KAFKA_SSL_KEY: path.join(dir, 'client.key'),
      KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512',
      KAFKA_SASL_USERNAME: 'relay',
      KAFKA_SASL_PASSWORD: 's3cret',
    };
    expect(kafkaConnection({}, env, file)).toEqual({
      brokers: ['a:9093', 'b:9093'],
      clientId: 'orders-relay',
      settings: { ssl: { ca: 'ca.pem contents\n', cert: 'client.pem contents\n', key: 'client.key contents\n' }, sasl: { mechanism: 'scram-sha-512', username: 'relay', password: 's3cret' } },
    });
    expect(kafkaConnection({ brokers: 'c:9092' }, { KAFKA_SSL: 'true', KAFKA_SASL_MECHANISM: 'scram-sha-256', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'p' }, {})).toEqual({
      brokers: ['c:9092'],
      clientId: undefined,
      settings: { ssl: true, sasl: { mechanism: 'scram-sha-256', username: 'u', password: 'p' } },
    });
    expect(kafkaConnection({ brokers: 'c:9092' }, {}, {})).toEqual({ brokers: ['c:9092'], clientId: undefined, settings: {} });
    expect(() => kafkaConnection({ brokers: 'c:9092' }, { KAFKA_SASL_MECHANISM: 'gssapi', KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'p' }, {})).toThrow(/plain, scram-sha-256, scram-sha-512/);
    expect(() => kafkaConnection({ brokers: 'c:9092' }, { KAFKA_SASL_USERNAME: 'u' }, {})).toThrow(/SASL needs a mechanism/);
    expect(() => kafkaConnection({ brokers: 'c:9092' }, { KAFKA_SSL_CERT: path.join(dir, 'client.pem') }, {})).toThrow(/both cert and key/);
    expect(() => kafkaConnection({ brokers: 'c:9092' }, { KAFKA_SSL_CA: path.join(dir, 'missing.pem') }, {})).toThrow(/cannot read the TLS CA file/);
    expect(() => kafkaConnection({}, {}, {})).toThrow(/no Kafka brokers/);
  });

  it('gives the relay the chosen client with the same TLS and SASL in that client’s terms', () => {
    const connection = { brokers: ['c:9092'], clientId: undefined, settings: { ssl: { ca: 'pem', servername: 'kafka.internal' }, sasl: { mechanism: 'scram-sha-512' as const, username: 'u', password: 'p' } } };
    expect(relayClient({}, {}, {}, connection)).toEqual({ client: 'kafkajs', kafka: connection.settings });
    expect(relayClient({ client: 'platformatic' }, {}, {}, connection)).toEqual({
      client: 'platformatic',
      platformatic: { tls: { ca: 'pem', servername: 'kafka.internal' }, sasl: { mechanism: 'SCRAM-SHA-512', username: 'u', password: 'p' } },
    });
    // Flag over environment over config file.
    expect(relayClient({}, { EFFECTIVELY_KAFKA_CLIENT: 'platformatic' }, { kafka: { client: 'kafkajs' } }, { ...connection, settings: { ssl: true } })).toEqual({ client: 'platformatic', platformatic: { tls: {} } });
    expect(relayClient({ client: 'kafkajs' }, { EFFECTIVELY_KAFKA_CLIENT: 'platformatic' }, {}, { ...connection, settings: {} })).toEqual({ client: 'kafkajs', kafka: {} });
    expect(relayClient({}, {}, { kafka: { client: 'platformatic' } }, { ...connection, settings: { sasl: { mechanism: 'plain', username: 'a', password: 'b' } } })).toEqual({
      client: 'platformatic',
      platformatic: { sasl: { mechanism: 'PLAIN', username: 'a', password: 'b' } },
    });
    expect(() => relayClient({}, { EFFECTIVELY_KAFKA_CLIENT: 'java' }, {}, connection)).toThrow(/EFFECTIVELY_KAFKA_CLIENT must be one of kafkajs, platformatic/);
  });

  describe('prune --idempotency-keys', () => {
    let s: TestSchema;
    beforeAll(async () => {
      s = await createTestSchema(databaseUrl, 'cli_prune');
    });
    afterAll(() => s.drop());

    it('deletes expired idempotency keys and keeps live ones', async () => {
      const keys = sql.id(s.schema, 'idempotency_keys');
      await sql`
        INSERT INTO ${keys} (scope, key, method, route, fingerprint, status, lease_token, response_status, response_headers, response_body, completed_at, expires_at)
        SELECT 'acct', 'k' || i, 'POST', '/payments', 'f', 'completed', 't', 201, '{}'::jsonb, '\\x'::bytea, now(), now() + CASE WHEN i <= 3 THEN interval '-1 hour' ELSE interval '1 hour' END
        FROM generate_series(1, 5) AS i`.execute(s.db);
      const r = cli(['prune', '--schema', s.schema, '--idempotency-keys'], env);
      expect(r).toMatchObject({ code: 0, stderr: '', stdout: 'expired idempotency keys deleted: 3\n' });
      const { rows } = await sql<{ key: string }>`SELECT key FROM ${keys} ORDER BY key`.execute(s.db);
      expect(rows.map((row) => row.key)).toEqual(['k4', 'k5']);
    });
  });

  describe('retention', () => {
    let s: TestSchema;
    beforeAll(async () => {
      s = await createTestSchema(databaseUrl, 'cli_retention');
    });
    afterAll(() => s.drop());

    it('enable, status, rotate; bad values refused with exit 2; prune --processed-events refused once on generations', () => {
      for (const [args, message] of [
        [['retention', 'enable', '--schema', s.schema, '--window', '7d'], /needs --window WINDOW and --interval INTERVAL/],
        [['retention', 'enable', '--schema', s.schema, '--window', '7 days', '--interval', '1d'], /--window must be a duration/],
        [['retention', 'enable', '--schema', s.schema, '--window', '1d', '--interval', '7d'], /must not exceed windowMs/],
        [['retention', 'rotate', '--schema', s.schema], /not enabled/],
      ] as Array<[string[], RegExp]>) {
        const r = cli(args, env);
        expect({ args, code: r.code }).toEqual({ args, code: 2 });
        expect(r.stderr).toMatch(message);
      }
      expect(JSON.parse(cli(['retention', 'status', '--schema', s.schema], env).stdout)).toMatchObject({ enabled: false });
      const enabled = cli(['retention', 'enable', '--schema', s.schema, '--window', '7d', '--interval', '1d'], env);
      expect(enabled.code).toBe(0);
      expect(JSON.parse(enabled.stdout)).toMatchObject({ enabled: true, windowMs: 604_800_000, intervalMs: 86_400_000, slots: 9, currentGeneration: 1 });
      const rotated = cli(['retention', 'rotate', '--schema', s.schema], env);
      expect(rotated.code).toBe(0);
      expect(JSON.parse(rotated.stdout)).toMatchObject({ rotated: false, currentGeneration: 1, forgotten: [] });
      const pruned = cli(['prune', '--schema', s.schema, '--processed-events', '14d'], env);
      expect(pruned.code).toBe(2);
      expect(pruned.stderr).toMatch(/by generations.*effectively retention rotate/);
    });
  });

  it('smoke round-trips through the outbox and relay and leaves no schema or topic behind', async () => {
    const r = cli(['smoke'], env);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const schema = /migrated schema (\S+)/.exec(r.stdout)?.[1];
    const topic = /created topic (\S+)/.exec(r.stdout)?.[1];
    expect(r.stdout).toMatch(/published 100 outbox rows/);
    expect(r.stdout).toMatch(/removed schema \S+ and topic \S+/);
    expect(await schemaExists(databaseUrl, schema as string)).toBe(false);
    const admin = testKafka(brokers).admin();
    await admin.connect();
    try {
      expect(await admin.listTopics()).not.toContain(topic);
    } finally {
      await admin.disconnect();
    }
  });
});
