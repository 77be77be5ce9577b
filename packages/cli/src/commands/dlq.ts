import { createDatabase, InvalidConfigError } from '@effectively/core';
import { listDeadLetters, replayDeadLetters, type DeadLetter, type DeadLetterFilter, type DeadLetterSource } from '@effectively/kafka';
import { defineCommand, defineGroup, ExitCode, type CommandIo, type OptionValues } from '../command';
import { commandLogger } from '../options';
import { configFile, DATABASE_OPTIONS, databaseUrl, KAFKA_OPTIONS, kafkaConnection, schemaName } from '../settings';

/** Which dead letters: the dead-letter topics to read and the filters. */
const SELECTION_OPTIONS = {
  ...KAFKA_OPTIONS,
  'dlq-topic': { type: 'string', multiple: true, value: 'TOPIC', description: 'dead-letter topic to read, e.g. orders.dlq (repeatable); required' },
  topic: { type: 'string', multiple: true, value: 'TOPIC', description: 'only dead letters of this original topic (repeatable)' },
  'event-id': { type: 'string', multiple: true, value: 'ID', description: 'only this event id (repeatable)' },
  reason: { type: 'string', multiple: true, value: 'REASON', description: 'only this reason: handler-failed, malformed-payload, tombstone, … (repeatable)' },
  group: { type: 'string', multiple: true, value: 'GROUP', description: 'only dead letters of this consumer group (repeatable)' },
  since: { type: 'string', value: 'TIME', description: 'only dead-lettered at or after this ISO 8601 time' },
  until: { type: 'string', value: 'TIME', description: 'only dead-lettered before this ISO 8601 time' },
  config: DATABASE_OPTIONS.config,
} as const;

/** A date, or a date and time with an optional zone (`Z`, `+01:00`): what ISO 8601 writes. */
const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

function time(name: string, raw: string | undefined): Date | undefined {
  if (raw === undefined) return undefined;
  const date = new Date(raw);
  // Date also accepts "1" (the year 2001) and "May 3": refused, a typo must not widen the range.
  if (!ISO_8601.test(raw) || Number.isNaN(date.getTime())) throw new InvalidConfigError(`--${name} must be an ISO 8601 time such as 2026-11-30T12:00:00Z, got ${JSON.stringify(raw)}.`);
  return date;
}

function source(values: OptionValues<typeof SELECTION_OPTIONS>, io: CommandIo): DeadLetterSource {
  const topics = values['dlq-topic'] ?? [];
  if (topics.length === 0) throw new InvalidConfigError('name the dead-letter topic(s) to read: --dlq-topic orders.dlq (repeatable).');
  const kafka = kafkaConnection(values, io.env, configFile(values, io.env));
  const filter: DeadLetterFilter = {};
  if (values.topic !== undefined) filter.topics = values.topic;
  if (values['event-id'] !== undefined) filter.eventIds = values['event-id'];
  if (values.reason !== undefined) filter.reasons = values.reason;
  if (values.group !== undefined) filter.groups = values.group;
  const since = time('since', values.since);
  const until = time('until', values.until);
  if (since !== undefined && until !== undefined && since.getTime() >= until.getTime()) {
    throw new InvalidConfigError(`--since ${since.toISOString()} is not before --until ${until.toISOString()}: the range is empty; swap them or widen it.`);
  }
  if (since !== undefined) filter.since = since;
  if (until !== undefined) filter.until = until;
  return { brokers: kafka.brokers, kafka: kafka.settings, deadLetterTopics: topics, filter, logger: commandLogger(io.env) };
}

/** A dead letter as one line of JSON (key as UTF-8 text, value by size). */
function line(l: DeadLetter): string {
  return `${JSON.stringify({
    dlqTopic: l.topic,
    partition: l.partition,
    offset: l.offset,
    at: new Date(l.timestamp).toISOString(),
    reason: l.reason,
    group: l.group,
    eventId: l.eventId,
    eventIdOrigin: l.eventIdOrigin,
    topic: l.originalTopic,
    originalPartition: l.originalPartition,
    originalOffset: l.originalOffset,
    attempts: l.attempts,
    error: l.error,
    key: l.key === null ? null : l.key.toString('utf8'),
    valueBytes: l.value === null ? null : l.value.length,
  })}\n`;
}

const list = defineCommand({
  name: 'list',
  summary: 'list dead letters, one JSON object per line (reads the dead-letter topics; writes nothing)',
  usage: '--dlq-topic TOPIC [--topic T] [--event-id ID] [--reason R] [--group G] [--since TIME] [--until TIME]',
  options: SELECTION_OPTIONS,
  run: async ({ values, io }) => {
    for (const l of await listDeadLetters(source(values, io))) io.stdout.write(line(l));
    return ExitCode.ok;
  },
});

const replay = defineCommand({
  name: 'replay',
  summary: 'replay chosen dead letters to their original topic through the outbox (dry run unless --execute)',
  usage: '--schema NAME --dlq-topic TOPIC [filters as for list] [--execute] [--redrive-id ID]',
  description: [
    'Each chosen event (the latest dead letter per event id) is written to the outbox, in one',
    'transaction, for its original topic with its original key, value, headers and event id and the',
    'header effectively-redrive: <redrive id>; the relay publishes it. A consumer group that',
    'dead-lettered the event applies it once; one that applied it skips it. Without --execute',
    'nothing is written. Running again with the same --redrive-id applies nothing twice.',
  ].join('\n'),
  options: {
    ...SELECTION_OPTIONS,
    schema: DATABASE_OPTIONS.schema,
    'database-url': DATABASE_OPTIONS['database-url'],
    execute: { type: 'boolean', description: 'write the replay (default: dry run)' },
    'redrive-id': { type: 'string', value: 'ID', description: 'id of this replay (default: a new UUIDv7); reuse it to resume a replay' },
  },
  run: async ({ values, io }) => {
    const config = configFile(values, io.env);
    const schema = schemaName(values, io.env, config);
    const database = createDatabase({ connectionString: databaseUrl(values, io.env, config), max: 1, logger: commandLogger(io.env), applicationName: 'effectively-cli' });
    try {
      const result = await replayDeadLetters({
        ...source(values, io),
        db: database.db,
        schema,
        execute: values.execute === true,
        ...(values['redrive-id'] === undefined ? {} : { redriveId: values['redrive-id'] }),
      });
      for (const l of result.replayed) io.stdout.write(line(l));
      for (const s of result.skipped) io.stderr.write(`skipped ${s.letter.eventId} (${s.letter.topic}/${s.letter.partition}/${s.letter.offset}): ${s.why}\n`);
      io.stdout.write(
        result.dryRun
          ? `dry run: would replay ${result.replayed.length} dead letter(s) with redrive id ${result.redriveId}; add --execute to write them\n`
          : `replayed ${result.replayed.length} dead letter(s): ${result.written} row(s) written to the outbox, redrive id ${result.redriveId}\n`,
      );
      return ExitCode.ok;
    } finally {
      await database.destroy();
    }
  },
});

/** `effectively dlq list|replay`: read dead-letter topics and re-drive chosen dead letters. */
export const dlqCommand = defineGroup({ name: 'dlq', summary: 'dead letters: list | replay', actions: [list, replay] });
