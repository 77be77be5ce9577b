import type { RunningKafka, RunningPostgres, TestSchema } from '@effectively/testkit';

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

/** The services and schema a bench started, as far as it got: what {@link stopServices} removes. */
export interface BenchServices {
  kafka?: RunningKafka;
  postgres?: RunningPostgres;
  schema?: TestSchema;
}

/** A bench's cleanup: drops the schema, then stops Kafka and Postgres (the first two's errors ignored). */
export async function stopServices(state: BenchServices): Promise<void> {
  await state.schema?.drop().catch(() => undefined);
  await state.kafka?.stop().catch(() => undefined);
  await state.postgres?.stop();
}
