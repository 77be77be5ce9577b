/**
 * `npm run smoke` on a fresh clone: gets Kafka and Postgres the way the tests do (addresses in
 * the environment, testcontainers, or a local broker from Maven Central and embedded Postgres),
 * then runs `effectively smoke` against them. The CLI itself never starts services.
 */
import { run } from '@effectively/cli';
import { startKafka, startPostgres } from '@effectively/testkit';

async function main(): Promise<number> {
  const [kafka, postgres] = await Promise.all([startKafka(), startPostgres()]);
  try {
    process.stdout.write(`kafka${kafka.version === undefined ? '' : ` ${kafka.version}`} (${kafka.source}, ${kafka.startupMs} ms), postgres (${postgres.source}, ${postgres.startupMs} ms)\n`);
    return await run(['smoke', ...process.argv.slice(2)], { stdout: process.stdout, stderr: process.stderr, env: { ...process.env, DATABASE_URL: postgres.url, KAFKA_BROKERS: kafka.brokers.join(',') } });
  } finally {
    await Promise.allSettled([kafka.stop(), postgres.stop()]);
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`smoke: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
