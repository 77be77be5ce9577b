import { spawn, type ChildProcess } from 'node:child_process';
import type { Server } from 'node:http';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { sql, type Kysely } from 'kysely';
import { createTestSchema, testServices, type TestSchema } from '@effectively/testkit';

/** A response as the client saw it. */
export interface ClientResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
}

/** Sends a request with an optional Idempotency-Key; a body object is sent as JSON, a string as is (with JSON content type). */
export async function send(
  baseUrl: string,
  route: string,
  options: { key?: string; body?: unknown; method?: string; headers?: Record<string, string> } = {},
): Promise<ClientResponse> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers['idempotency-key'] = options.key;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  }
  const res = await fetch(baseUrl + route, { method: options.method ?? 'POST', headers, body });
  const bytes = Buffer.from(await res.arrayBuffer());
  const out: Record<string, string> = {};
  res.headers.forEach((value, name) => {
    out[name] = value;
  });
  return { status: res.status, headers: out, body: bytes, text: bytes.toString('utf8') };
}

/** Headers that legitimately differ between two responses of the same server. */
const VOLATILE = new Set(['date', 'connection', 'keep-alive', 'idempotent-replayed']);

/** The headers of a response without the per-connection ones, for comparing a replay with the original. */
export function stableHeaders(r: ClientResponse): Record<string, string> {
  return Object.fromEntries(Object.entries(r.headers).filter(([name]) => !VOLATILE.has(name)));
}

/** Starts an http.Server (Express app.listen) on 127.0.0.1 and an ephemeral port. */
export async function listen(start: (port: number, host: string, ready: () => void) => Server): Promise<{ url: string; close: () => Promise<void> }> {
  const server = await new Promise<Server>((resolve) => {
    const s: Server = start(0, '127.0.0.1', () => resolve(s));
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address');
  return {
    url: `http://127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}

/** Creates the business table the test handlers write their effects into. */
export async function createEffectsTable(db: Kysely<unknown>, schema: string): Promise<void> {
  await sql`CREATE TABLE ${sql.id(schema, 'effects')} (id bigserial PRIMARY KEY, key text NOT NULL, note text)`.execute(db);
}

/** Counts effect rows (all, or for one key). */
export async function countEffects(db: Kysely<unknown>, schema: string, key?: string): Promise<number> {
  const r = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(schema, 'effects')} WHERE ${key === undefined ? sql`true` : sql`key = ${key}`}`.execute(db);
  return Number(r.rows[0]?.n);
}

/** Counts rows of a table in the schema. */
export async function countRows(db: Kysely<unknown>, schema: string, table: string): Promise<number> {
  const r = await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(schema, table)}`.execute(db);
  return Number(r.rows[0]?.n);
}

/** A server running in a child process (test/fixtures/server.ts). */
export interface ChildServer {
  readonly url: string;
  readonly child: ChildProcess;
  /** Resolves with the next line the server prints whose `event` is `name`. */
  next(name: string): Promise<Record<string, unknown>>;
  /** SIGKILLs the process and waits until it is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const REPO_ROOT = path.resolve(__dirname, '../../..');
const FIXTURE = path.join(__dirname, 'fixtures', 'server.ts');

/** Spawns the fixture server with plain node + the tsx loader (no grandchild), and waits until it listens. */
export async function spawnServer(env: Record<string, string>): Promise<ChildServer> {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const events: Record<string, unknown>[] = [];
  const waiters: { name: string; resolve: (e: Record<string, unknown>) => void }[] = [];
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const i = waiters.findIndex((w) => w.name === event.event);
    if (i >= 0) waiters.splice(i, 1)[0]!.resolve(event);
    else events.push(event);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const next = (name: string): Promise<Record<string, unknown>> => {
    const i = events.findIndex((e) => e.event === name);
    if (i >= 0) return Promise.resolve(events.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      waiters.push({ name, resolve });
      void exited.then(() => reject(new Error(`fixture server exited before "${name}": ${stderr}`)));
    });
  };
  const ready = await next('ready');
  return {
    url: `http://127.0.0.1:${String(ready.port)}`,
    child,
    next,
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A schema with the effects table for the test file and servers started as child processes
 * against it, all cleaned up after the file: registers the file's beforeAll/afterAll.
 */
export function serverProcesses(prefix: string): { schema: () => TestSchema; start: (env?: Record<string, string>) => Promise<ChildServer> } {
  const { databaseUrl } = testServices();
  let ts: TestSchema | undefined;
  const servers: ChildServer[] = [];
  beforeAll(async () => {
    ts = await createTestSchema(databaseUrl, prefix);
    await createEffectsTable(ts.db, ts.schema);
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.kill()));
    await ts?.drop();
  });
  const schema = (): TestSchema => {
    if (ts === undefined) throw new Error('serverProcesses: the schema exists only inside tests (after beforeAll)');
    return ts;
  };
  return {
    schema,
    start: async (env = {}) => {
      const s = await spawnServer({ DATABASE_URL: databaseUrl, SCHEMA: schema().schema, ...env });
      servers.push(s);
      return s;
    },
  };
}
