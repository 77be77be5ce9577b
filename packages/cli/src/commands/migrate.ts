import { createDatabase, migrate } from '@effectively/core';
import { defineCommand, ExitCode } from '../command';
import { commandLogger } from '../options';
import { configFile, DATABASE_OPTIONS, databaseUrl, schemaName } from '../settings';

/** `effectively migrate --schema NAME`: creates the schema if needed and applies pending migrations. */
export const migrateCommand = defineCommand({
  name: 'migrate',
  summary: 'create the schema if needed and apply pending migrations',
  usage: '--schema NAME [--database-url URL] [--config FILE]',
  description: 'Creates the Postgres schema NAME if it does not exist and applies the migrations it lacks,\nin order, under an advisory lock (safe to run from several deploys at once).',
  options: DATABASE_OPTIONS,
  async run({ values, io }) {
    const config = configFile(values, io.env);
    const schema = schemaName(values, io.env, config);
    const database = createDatabase({ connectionString: databaseUrl(values, io.env, config), max: 1, logger: commandLogger(io.env), applicationName: 'effectively-migrate' });
    try {
      const outcome = await migrate(database.db, { schema });
      io.stdout.write(outcome.applied.length > 0 ? `schema ${schema}: applied ${outcome.applied.join(', ')}\n` : `schema ${schema}: up to date\n`);
      return ExitCode.ok;
    } finally {
      await database.destroy();
    }
  },
});
