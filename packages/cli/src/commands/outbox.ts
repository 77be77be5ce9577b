import { createDatabase, InvalidConfigError } from '@effectively/core';
import { discardParked, listParked, requeueParked, type ParkedSelection } from '@effectively/relay';
import { defineCommand, defineGroup, ExitCode, type CommandIo } from '../command';
import { commandLogger, intValue } from '../options';
import { configFile, DATABASE_OPTIONS, databaseUrl, schemaName } from '../settings';

const SELECTION_OPTIONS = {
  ...DATABASE_OPTIONS,
  ids: { type: 'string', value: 'ID,…', description: 'outbox row ids, from `outbox parked`' },
  all: { type: 'boolean', description: 'every parked row (of --topic, if given)' },
  topic: { type: 'string', value: 'TOPIC', description: 'with --all: only rows of this topic' },
} as const;

function selection(values: { ids?: string; all?: boolean; topic?: string }): ParkedSelection {
  if (values.ids !== undefined && values.all === true) throw new InvalidConfigError('choose either --ids or --all, not both.');
  if (values.ids !== undefined) {
    const ids = values.ids.split(',').map((id) => id.trim()).filter((id) => id !== '');
    if (ids.length === 0 || !ids.every((id) => /^\d+$/.test(id))) throw new InvalidConfigError(`--ids must list outbox row ids like 12,13, got ${JSON.stringify(values.ids)}.`);
    if (values.topic !== undefined) throw new InvalidConfigError('--topic goes with --all, not with --ids.');
    return { ids };
  }
  if (values.all === true) return values.topic === undefined ? { all: true } : { all: true, topic: values.topic };
  throw new InvalidConfigError('choose the rows: --ids 12,13 (ids from `effectively outbox parked`) or --all [--topic t].');
}

async function withDatabase(values: { config?: string; schema?: string; 'database-url'?: string }, io: CommandIo, work: (db: ReturnType<typeof createDatabase>['db'], schema: string) => Promise<void>): Promise<number> {
  const config = configFile(values, io.env);
  const schema = schemaName(values, io.env, config);
  const database = createDatabase({ connectionString: databaseUrl(values, io.env, config), max: 1, logger: commandLogger(io.env), applicationName: 'effectively-cli' });
  try {
    await work(database.db, schema);
    return ExitCode.ok;
  } finally {
    await database.destroy();
  }
}

const parked = defineCommand({
  name: 'parked',
  summary: 'list parked outbox rows, one JSON object per line',
  usage: '--schema NAME [--limit 100]',
  options: { ...DATABASE_OPTIONS, limit: { type: 'string', value: 'N', description: 'at most N rows (default 100)' } },
  run: ({ values, io }) =>
    withDatabase(values, io, async (db, schema) => {
      const limit = intValue(values.limit, {}, 'limit', 'limit') ?? 100;
      for (const row of await listParked(db, { schema, limit })) io.stdout.write(`${JSON.stringify(row)}\n`);
    }),
});

const requeue = defineCommand({
  name: 'requeue',
  summary: 'put parked rows back in the queue (after fixing the cause); the rows behind them follow',
  usage: '--schema NAME (--ids ID,… | --all [--topic TOPIC])',
  options: SELECTION_OPTIONS,
  run: ({ values, io }) =>
    withDatabase(values, io, async (db, schema) => {
      const ids = await requeueParked(db, selection(values), { schema });
      io.stdout.write(`requeued ${ids.length} row(s)${ids.length > 0 ? `: ${ids.join(', ')}` : ''}\n`);
    }),
});

const discard = defineCommand({
  name: 'discard',
  summary: 'delete parked rows for good; the rows behind them flow on',
  usage: '--schema NAME (--ids ID,… | --all [--topic TOPIC])',
  options: SELECTION_OPTIONS,
  run: ({ values, io }) =>
    withDatabase(values, io, async (db, schema) => {
      const ids = await discardParked(db, selection(values), { schema });
      io.stdout.write(`discarded ${ids.length} row(s)${ids.length > 0 ? `: ${ids.join(', ')}` : ''}\n`);
    }),
});

/** `effectively outbox parked|requeue|discard`: operator tools for parked outbox rows. */
export const outboxCommand = defineGroup({ name: 'outbox', summary: 'parked outbox rows: parked | requeue | discard', actions: [parked, requeue, discard] });
