import { spawn } from 'node:child_process';

/** The outcome of running a command to completion. */
export interface CommandResult {
  code: number | null;
  output: string;
  /** The spawn error, e.g. ENOENT when the command does not exist. */
  error?: NodeJS.ErrnoException;
}

/** Runs a command, collecting stdout and stderr together; never throws. */
export function runCommand(command: string, args: string[], options: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    let output = '';
    let settled = false;
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], ...(options.uid !== undefined ? { uid: options.uid, gid: options.gid } : {}) });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 600_000);
    const collect = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
      if (output.length > 200_000) output = output.slice(-100_000);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ code: null, output, error });
    });
    child.on('close', (code) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** The last `lines` lines of `text`, for error messages. */
export function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
