#!/usr/bin/env node
import { EffectivelyError, createLogger } from '@effectively/core';
import { parseArgs } from './args';
import { migrateCommand, outboxCommand, pruneCommand, relayCommand, smokeCommand, type Command } from './commands';

const COMMANDS: Record<string, Command> = {
  migrate: migrateCommand,
  smoke: smokeCommand,
  relay: relayCommand,
  prune: pruneCommand,
  outbox: outboxCommand,
};

const USAGE = `usage: effectively <command> [options]
  migrate [--schema effectively] [--database-url URL]   apply pending migrations (DATABASE_URL)
  relay [--schema effectively] [--brokers h:p]           publish the outbox to Kafka (DATABASE_URL, KAFKA_BROKERS) until SIGTERM;
        [--http-port 9400] [--http-host 0.0.0.0]          serves /metrics and /healthz (--http-port 0: off)
        [--batch-size 500] [--poll-interval-ms 500] [--lease-ms 10000]
  outbox parked [--limit 100]                           list parked outbox rows (JSON lines)
  outbox requeue --ids 1,2 | --all [--topic t]          re-queue parked rows (after fixing the cause)
  outbox discard --ids 1,2 | --all [--topic t]          delete parked rows; the rows behind them flow on
  prune [--processed-events 14d] [--outbox 7d]          delete old processed-event records / published outbox rows in small batches
  smoke                                                 start/reach Kafka and Postgres and round-trip data`;

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const command = args.command === undefined ? undefined : COMMANDS[args.command];
  if (command === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return args.command === undefined || args.command === 'help' ? 0 : 2;
  }
  return command(args);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    createLogger('effectively-cli').error({ err: error, code: error instanceof EffectivelyError ? error.code : undefined }, error instanceof Error ? error.message : String(error));
    process.exit(1);
  },
);
