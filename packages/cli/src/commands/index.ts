import type { Command } from '../command';
import { dlqCommand } from './dlq';
import { migrateCommand } from './migrate';
import { outboxCommand } from './outbox';
import { pruneCommand } from './prune';
import { retentionCommand } from './retention';
import { relayCommand } from './relay';
import { smokeCommand } from './smoke';

/** Every `effectively` command, in the order `--help` lists them. A new command: one module, one line here. */
export const COMMANDS: readonly Command[] = [migrateCommand, relayCommand, outboxCommand, dlqCommand, pruneCommand, retentionCommand, smokeCommand];
