import { EffectivelyError, InvalidConfigError, InvalidIdentifierError, OptionalPeerError } from '@effectively/core';
import { commandList, ExitCode, UsageError, type Command, type CommandIo } from './command';
import { COMMANDS } from './commands';
import { cliVersion } from './version';

const NAME = 'effectively';

function usage(commands: readonly Command[]): string {
  return [
    `usage: ${NAME} <command> [options]`,
    '',
    'commands:',
    commandList(commands),
    '',
    `Run \`${NAME} <command> --help\` for a command's options. ${NAME} --version prints the version.`,
    'Exit codes: 0 done, 1 failed while running, 2 bad command line or configuration (nothing was run).',
    '',
  ].join('\n');
}

function message(error: unknown): string {
  if (error instanceof Error) {
    const text = error.message !== '' ? error.message : error.name;
    return text.replace(/\s*\n\s*/g, ' ');
  }
  return String(error);
}

/**
 * Runs `effectively` with `argv` (the words after the program name) and resolves to the exit
 * code. Errors become one line on stderr: `effectively <command>: <what went wrong>`.
 */
export async function run(argv: readonly string[], io: CommandIo = { stdout: process.stdout, stderr: process.stderr, env: process.env }, commands: readonly Command[] = COMMANDS): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '--version' || first === '-v') {
    io.stdout.write(`${cliVersion()}\n`);
    return ExitCode.ok;
  }
  if (first === '--help' || first === '-h' || first === 'help') {
    io.stdout.write(usage(commands));
    return ExitCode.ok;
  }
  if (first === undefined) {
    io.stderr.write(usage(commands));
    return ExitCode.usage;
  }
  const command = commands.find((c) => c.name === first);
  if (command === undefined) {
    io.stderr.write(`${NAME}: unknown command ${JSON.stringify(first)}; commands: ${commands.map((c) => c.name).join(', ')} (see ${NAME} --help)\n`);
    return ExitCode.usage;
  }
  try {
    return await command.run(rest, io, NAME);
  } catch (error) {
    // A missing optional peer (or too old a Node.js for it) is configuration too: nothing was run.
    const usageError = error instanceof UsageError || error instanceof InvalidConfigError || error instanceof InvalidIdentifierError || error instanceof OptionalPeerError;
    const hint = error instanceof UsageError ? ` (see ${NAME} ${command.name} --help)` : '';
    const code = error instanceof EffectivelyError && !usageError ? ` [${error.code}]` : '';
    io.stderr.write(`${NAME} ${command.name}: ${message(error)}${code}${hint}\n`);
    return usageError ? ExitCode.usage : ExitCode.failed;
  }
}
