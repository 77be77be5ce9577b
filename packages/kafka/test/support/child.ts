import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

/** A consumer running in a child process (see fixtures/consumer-process.ts). */
export interface ConsumerChild {
  process: ChildProcess;
  lines: string[];
  /** Resolves with the exit signal (e.g. 'SIGKILL') or code. */
  exited: Promise<string>;
  /**
   * Resolves with how the process ended (as `exited`), or rejects after `timeoutMs` with its last
   * lines, SIGKILLing it so that no child outlives the test.
   */
  exitWithin(timeoutMs: number, what: string): Promise<string>;
  /** Resolves when a line matching `pattern` has been printed. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<string>;
}

export function startConsumerChild(env: Record<string, string>, fixture = 'consumer-process.ts'): ConsumerChild {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'fixtures', fixture)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; resolve: (line: string) => void }> = [];
  readline.createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.pattern.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? String(code))));
  return {
    process: child,
    lines,
    exited,
    exitWithin: (timeoutMs, what) =>
      new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`${what}: the consumer did not exit within ${timeoutMs} ms; its last lines: ${lines.slice(-5).join(' | ')}`));
          child.kill('SIGKILL');
        }, timeoutMs);
        void exited.then((how) => (clearTimeout(timer), resolve(how)));
      }),
    waitForLine: (pattern, timeoutMs = 60_000) =>
      new Promise<string>((resolve, reject) => {
        const found = lines.find((l) => pattern.test(l));
        if (found !== undefined) return resolve(found);
        const timer = setTimeout(() => reject(new Error(`no line matching ${String(pattern)} within ${timeoutMs} ms; saw: ${lines.slice(-5).join(' | ')}`)), timeoutMs);
        waiters.push({ pattern, resolve: (l) => (clearTimeout(timer), resolve(l)) });
        // An exit ends the wait (and its timer, which would otherwise keep the jest worker alive).
        void exited.then((how) => (clearTimeout(timer), reject(new Error(`consumer exited (${how}) before printing ${String(pattern)}`))));
      }),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const how = await exited;
      clearTimeout(timer);
      return how;
    },
  };
}
