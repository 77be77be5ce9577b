import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

/**
 * Runs a server under a bash guardian that kills it when this Node process disappears (even
 * by SIGKILL), and turns SIGTERM into the server's own clean-shutdown signal. No server this
 * kit starts outlives the process that started it.
 */
const GUARDIAN = `
"$@" &
spid=$!
trap 'kill -$EFFECTIVELY_STOP_SIGNAL $spid 2>/dev/null; wait $spid; exit 0' TERM INT
parent_alive() { [ -e "/proc/$EFFECTIVELY_PARENT_PID" ] || kill -0 "$EFFECTIVELY_PARENT_PID" 2>/dev/null; }
while parent_alive && kill -0 $spid 2>/dev/null; do sleep 0.5 & wait $!; done
kill -$EFFECTIVELY_STOP_SIGNAL $spid 2>/dev/null
for i in $(seq 1 40); do kill -0 $spid 2>/dev/null || exit 0; sleep 0.25; done
kill -KILL $spid 2>/dev/null
`;

/** A server process under a guardian. */
export interface GuardedProcess {
  readonly child: ChildProcess;
  /** True once the process has exited. */
  exited(): boolean;
  /** Resolves when the process has exited. */
  whenExited(): Promise<void>;
  /** Clean shutdown (the stop signal), then SIGKILL of the whole group after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** Immediate SIGKILL of the server and its guardian (a crash). */
  kill(): Promise<void>;
}

/** Starts `command` under the guardian; `stopSignal` is what a clean stop sends (TERM for Kafka, INT for Postgres fast shutdown). */
export function spawnGuarded(command: string, args: string[], options: { stdio: SpawnOptions['stdio']; env?: NodeJS.ProcessEnv; stopSignal?: 'TERM' | 'INT'; uid?: number; gid?: number }): GuardedProcess {
  const child = spawn('bash', ['-c', GUARDIAN, 'effectively-guardian', command, ...args], {
    env: { ...(options.env ?? process.env), EFFECTIVELY_PARENT_PID: String(process.pid), EFFECTIVELY_STOP_SIGNAL: options.stopSignal ?? 'TERM' },
    stdio: options.stdio,
    detached: true,
    ...(options.uid !== undefined ? { uid: options.uid, gid: options.gid } : {}),
  });
  child.unref();
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
  // The child is unref'd so it never keeps this process alive by itself; whoever waits for
  // its exit holds a timer, so the wait is not cut short by an empty event loop.
  const whenExited = (): Promise<void> =>
    new Promise((resolve) => {
      if (exited()) return resolve();
      const hold = setInterval(() => undefined, 1000);
      child.once('exit', () => {
        clearInterval(hold);
        resolve();
      });
    });
  const killGroup = (): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  };
  return {
    child,
    exited,
    whenExited,
    stop: async (graceMs = 20_000) => {
      if (exited()) return;
      child.kill('SIGTERM');
      // The grace timer is cleared once the process exits, so it never holds this process open.
      let timer: NodeJS.Timeout | undefined;
      const clean = await Promise.race([whenExited().then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs)))]);
      clearTimeout(timer);
      if (!clean) {
        killGroup();
        await whenExited();
      }
    },
    kill: async () => {
      killGroup();
      await whenExited();
    },
  };
}
