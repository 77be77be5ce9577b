import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

export type Part = 'generator' | 'aggregator' | 'relay' | 'notifier';

/** A supervisor-protocol line (`@kind {json}`) printed by a child. */
export interface ChildReport {
  kind: string;
  data: Record<string, unknown>;
}

/** One part of the pipeline running as its own process (node --import tsx, no grandchild). */
export interface PartProcess {
  readonly part: Part;
  readonly name: string;
  readonly child: ChildProcess;
  /** The latest `@stats` the child printed. */
  lastStats: Record<string, unknown>;
  readonly reports: ChildReport[];
  /** Resolves with the exit signal (e.g. `SIGKILL`) or code. */
  readonly exited: Promise<string>;
  alive(): boolean;
  /**
   * Resolves with how the process ended (as `exited`), or rejects after `timeoutMs`, SIGKILLing
   * it so that no child outlives its supervisor.
   */
  exitWithin(timeoutMs: number): Promise<string>;
  waitFor(kind: string, timeoutMs?: number): Promise<ChildReport>;
  kill(): Promise<string>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<string>;
}

export function startPart(part: Part, name: string, env: Record<string, string>, options: { echoStderr?: boolean } = {}): PartProcess {
  const file = path.join(__dirname, 'processes', `${part}.ts`);
  const child = spawn(process.execPath, ['--import', 'tsx', file], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', options.echoStderr === false ? 'ignore' : 'inherit'],
  });
  const reports: ChildReport[] = [];
  const waiters: Array<{ kind: string; resolve: (r: ChildReport) => void }> = [];
  const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? String(code))));
  const handle: PartProcess = {
    part,
    name,
    child,
    lastStats: {},
    reports,
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    exitWithin: (timeoutMs) =>
      new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`${name}: did not exit within ${timeoutMs} ms`));
          child.kill('SIGKILL');
        }, timeoutMs);
        void exited.then((how) => (clearTimeout(timer), resolve(how)));
      }),
    waitFor: (kind, timeoutMs = 60_000) =>
      new Promise<ChildReport>((resolve, reject) => {
        const found = reports.find((r) => r.kind === kind);
        if (found !== undefined) return resolve(found);
        const timer = setTimeout(() => reject(new Error(`${name}: no @${kind} within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ kind, resolve: (r) => (clearTimeout(timer), resolve(r)) });
        void exited.then((how) => {
          clearTimeout(timer);
          reject(new Error(`${name} exited (${how}) before @${kind}`));
        });
      }),
    kill: async () => {
      if (handle.alive()) child.kill('SIGKILL');
      return exited;
    },
    stop: async (graceMs = 15_000) => {
      if (handle.alive()) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const how = await exited;
      clearTimeout(timer);
      return how;
    },
  };
  readline.createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    const match = /^@(\w+) (.*)$/.exec(line);
    if (match === null) return;
    let data: Record<string, unknown> = {};
    try {
      data = JSON.parse(match[2] as string) as Record<string, unknown>;
    } catch {
      return;
    }
    const r: ChildReport = { kind: match[1] as string, data };
    if (r.kind === 'stats') handle.lastStats = data;
    else reports.push(r);
    for (const w of [...waiters]) {
      if (w.kind === r.kind) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(r);
      }
    }
  });
  return handle;
}
