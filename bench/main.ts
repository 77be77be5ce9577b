/**
 * Runs a bench's `main`, then its `cleanup` whatever happened (cleanup errors are ignored: it
 * removes what the run made), and exits 1 if `main` failed, after saying why.
 */
export function runBench(main: () => Promise<void>, cleanup: () => Promise<void>, say: (line: string) => void): void {
  let code = 0;
  main()
    .catch((error: unknown) => {
      say(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      code = 1;
    })
    .finally(async () => {
      await cleanup().catch(() => undefined);
      process.exit(code);
    });
}
