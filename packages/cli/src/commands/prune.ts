import { createDatabase, InvalidConfigError } from '@effectively/core';
import { createIdempotency } from '@effectively/http';
import { pruneProcessedEvents } from '@effectively/kafka';
import { pruneOutbox } from '@effectively/relay';
import { defineCommand, ExitCode } from '../command';
import { commandLogger, durationMs } from '../options';
import { configFile, DATABASE_OPTIONS, databaseUrl, schemaName } from '../settings';

/** `effectively prune --schema NAME [--processed-events 14d] [--outbox 7d] [--idempotency-keys]`. */
export const pruneCommand = defineCommand({
  name: 'prune',
  summary: 'delete old processed-event records, published outbox rows, expired idempotency keys',
  usage: '--schema NAME [--processed-events WINDOW] [--outbox WINDOW] [--idempotency-keys]',
  description: [
    'Deletes in small batches. WINDOW is a duration: 30m, 12h, 7d.',
    'The processed-events window must exceed the longest replay you may ever do: an event',
    'redelivered after its record was pruned is applied again.',
  ].join('\n'),
  options: {
    ...DATABASE_OPTIONS,
    'processed-events': { type: 'string', value: 'WINDOW', description: 'delete processed-event records older than WINDOW' },
    outbox: { type: 'string', value: 'WINDOW', description: 'delete outbox rows marked published more than WINDOW ago' },
    'idempotency-keys': { type: 'boolean', description: 'delete expired HTTP idempotency keys (past their ttl)' },
  },
  async run({ values, io }) {
    const config = configFile(values, io.env);
    const schema = schemaName(values, io.env, config);
    const events = values['processed-events'] === undefined ? undefined : durationMs(values['processed-events'], '--processed-events');
    const outbox = values.outbox === undefined ? undefined : durationMs(values.outbox, '--outbox');
    const keys = values['idempotency-keys'] === true;
    if (events === undefined && outbox === undefined && !keys) {
      throw new InvalidConfigError('prune needs at least one of --processed-events WINDOW, --outbox WINDOW, --idempotency-keys.');
    }
    const logger = commandLogger(io.env);
    const database = createDatabase({ connectionString: databaseUrl(values, io.env, config), max: 1, logger, applicationName: 'effectively-prune' });
    try {
      if (outbox !== undefined) io.stdout.write(`published outbox rows deleted: ${(await pruneOutbox(database.db, { schema, olderThanMs: outbox })).deleted}\n`);
      if (keys) io.stdout.write(`expired idempotency keys deleted: ${await createIdempotency({ db: database.db, schema, logger }).prune()}\n`);
      // Last: on a schema whose retention is by generations it refuses (InvalidConfigError, exit 2) after the others ran.
      if (events !== undefined) io.stdout.write(`processed events deleted: ${await pruneProcessedEvents(database.db, { schema, olderThanMs: events })}\n`);
      return ExitCode.ok;
    } finally {
      await database.destroy();
    }
  },
});
