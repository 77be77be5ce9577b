import { createDatabase, InvalidConfigError, type Database } from '@effectively/core';
import { enableGenerations, readGenerations, rotateProcessedEvents } from '@effectively/kafka';
import { defineCommand, defineGroup, ExitCode, type Command, type CommandIo, type OptionValues } from '../command';
import { commandLogger, durationMs } from '../options';
import { configFile, DATABASE_OPTIONS, databaseUrl, schemaName } from '../settings';

async function withDatabase(values: OptionValues<typeof DATABASE_OPTIONS>, io: CommandIo, use: (database: Database<unknown>, schema: string) => Promise<number>): Promise<number> {
  const config = configFile(values, io.env);
  const schema = schemaName(values, io.env, config);
  const database = createDatabase({ connectionString: databaseUrl(values, io.env, config), max: 1, logger: commandLogger(io.env), applicationName: 'effectively-retention' });
  try {
    return await use(database, schema);
  } finally {
    await database.destroy();
  }
}

/** A command's result as one JSON line (dates as ISO 8601). */
function jsonLine(result: unknown): string {
  return `${JSON.stringify(result)}\n`;
}

/** An action that takes the database options only: runs `act` on that database and prints its result as one JSON line. */
function databaseAction(name: string, summary: string, act: (db: Database<unknown>['db'], schema: string) => Promise<unknown>): Command {
  return defineCommand({
    name,
    summary,
    usage: '--schema NAME',
    options: DATABASE_OPTIONS,
    run: async ({ values, io }) =>
      withDatabase(values, io, async (database, schema) => {
        io.stdout.write(jsonLine(await act(database.db, schema)));
        return ExitCode.ok;
      }),
  });
}

const enable = defineCommand({
  name: 'enable',
  summary: 'turn retention by generations on (or change its window and interval); prints the state as JSON',
  usage: '--schema NAME --window WINDOW --interval INTERVAL',
  description: [
    'Every id is remembered at least WINDOW after its record was written, and forgotten whole',
    'generations at a time (TRUNCATE) at most WINDOW + INTERVAL (+ one rotation check) after.',
    'processed_events takes no new claims afterwards; its records are still checked for WINDOW,',
    'then emptied. Durations: 30m, 12h, 7d. There is no way back to pruning but by hand.',
  ].join('\n'),
  options: {
    ...DATABASE_OPTIONS,
    window: { type: 'string', value: 'WINDOW', description: 'how long an id is remembered at least (longer than any replay you may do), e.g. 7d; required' },
    interval: { type: 'string', value: 'INTERVAL', description: 'how long each generation is current, e.g. 1d; required' },
  },
  run: async ({ values, io }) => {
    if (values.window === undefined || values.interval === undefined) throw new InvalidConfigError('retention enable needs --window WINDOW and --interval INTERVAL, e.g. --window 7d --interval 1d.');
    const windowMs = durationMs(values.window, '--window');
    const intervalMs = durationMs(values.interval, '--interval');
    return withDatabase(values, io, async (database, schema) => {
      io.stdout.write(jsonLine(await enableGenerations(database.db, { schema, windowMs, intervalMs })));
      return ExitCode.ok;
    });
  },
});

const rotate = databaseAction('rotate', 'forget generations older than the window and start a new one when due (safe to run anywhere, any time)', (db, schema) => rotateProcessedEvents(db, { schema }));

const status = databaseAction('status', 'print the state of retention by generations as JSON (reads only)', (db, schema) => readGenerations(db, { schema }));

/** `effectively retention enable|rotate|status`. */
export const retentionCommand = defineGroup({ name: 'retention', summary: 'dedup retention by generations: enable | rotate | status', actions: [enable, rotate, status] });
