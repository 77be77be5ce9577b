/**
 * The command seam: every `effectively <command>` is one {@link Command}, defined in its own
 * module under `commands/` with {@link defineCommand} (or {@link defineGroup} for
 * `<command> <action>` families such as `outbox parked|requeue|discard`), and listed once in
 * `commands/index.ts`. Parsing, `--help` and errors are handled here, the same for all.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** Exit codes of the `effectively` command (documented in the README). */
export const ExitCode = {
  /** Done. */
  ok: 0,
  /** The command ran and failed: a database or broker error, a failed check. */
  failed: 1,
  /** Nothing was run: unknown command or flag, missing or invalid option or configuration. */
  usage: 2,
} as const;

/** The command line was wrong (unknown flag, missing value): exit {@link ExitCode.usage}. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Where a command writes and what it reads from its environment. */
export interface CommandIo {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown };
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** One `effectively` command (or a group of actions). */
export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The text `--help` prints. */
  help(prefix: string): string;
  /** Runs with the words after the command name; resolves to the exit code. */
  run(argv: readonly string[], io: CommandIo, prefix: string): Promise<number>;
}

/** An option: node:util parseArgs' settings plus what `--help` says about it. */
export type OptionSpec = {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  readonly multiple?: boolean;
  /** What `--help` prints next to it. */
  readonly description: string;
  /** Placeholder for the value in `--help`, e.g. `NAME`. */
  readonly value?: string;
};

type OptionSpecs = Readonly<Record<string, OptionSpec>>;

type ValueOf<S extends OptionSpec> = S['type'] extends 'boolean' ? (S['multiple'] extends true ? boolean[] : boolean) : S['multiple'] extends true ? string[] : string;

/** The parsed option values of a command: every option may be absent. */
export type OptionValues<O extends OptionSpecs> = { [K in keyof O]?: ValueOf<O[K]> };

/** What a command's `run` receives. */
export interface CommandInput<O extends OptionSpecs> {
  readonly values: OptionValues<O>;
  readonly positionals: readonly string[];
  readonly io: CommandIo;
}

/** A command's definition. */
export interface CommandSpec<O extends OptionSpecs> {
  readonly name: string;
  readonly summary: string;
  /** Usage line after `effectively <name>`, e.g. `--schema NAME [--limit N]`. */
  readonly usage: string;
  /** Paragraphs printed by `--help` after the usage line. */
  readonly description?: string;
  readonly options: O;
  /** Positional words accepted (default none). */
  readonly positionals?: { readonly min: number; readonly max: number; readonly name: string };
  run(input: CommandInput<O>): Promise<number>;
}

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', description: 'print this help and exit' };

function optionsHelp(options: OptionSpecs): string {
  const rows = Object.entries({ ...options, help: HELP_OPTION }).map(([name, spec]) => {
    const flag = `${spec.short === undefined ? '    ' : `-${spec.short}, `}--${name}${spec.value === undefined ? '' : ` ${spec.value}`}`;
    return [flag, spec.description] as const;
  });
  const width = Math.max(...rows.map(([flag]) => flag.length));
  return rows.map(([flag, text]) => `  ${flag.padEnd(width)}  ${text}`).join('\n');
}

/** Defines a command whose options are parsed strictly by node:util's parseArgs. */
export function defineCommand<const O extends OptionSpecs>(spec: CommandSpec<O>): Command {
  const help = (prefix: string): string =>
    [`usage: ${prefix} ${spec.name}${spec.usage === '' ? '' : ` ${spec.usage}`}`, '', spec.summary, ...(spec.description === undefined ? [] : ['', spec.description]), '', 'options:', optionsHelp(spec.options), ''].join('\n');
  return {
    name: spec.name,
    summary: spec.summary,
    help,
    async run(argv, io, prefix) {
      const options: NonNullable<ParseArgsConfig['options']> = {};
      for (const [name, o] of Object.entries({ ...spec.options, help: HELP_OPTION })) {
        options[name] = { type: o.type, ...(o.short === undefined ? {} : { short: o.short }), ...(o.multiple === undefined ? {} : { multiple: o.multiple }) };
      }
      let parsed: { values: Record<string, unknown>; positionals: string[] };
      try {
        parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: true });
      } catch (error) {
        throw new UsageError((error instanceof Error ? error.message : String(error)).replace(/\. To specify a positional argument[\s\S]*$/, '').split('\n')[0] ?? '');
      }
      if (parsed.values['help'] === true) {
        io.stdout.write(help(prefix));
        return ExitCode.ok;
      }
      const allowed = spec.positionals ?? { min: 0, max: 0, name: '' };
      if (parsed.positionals.length > allowed.max) {
        throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[allowed.max])}`);
      }
      if (parsed.positionals.length < allowed.min) throw new UsageError(`missing ${allowed.name}`);
      const { help: _help, ...values } = parsed.values;
      return spec.run({ values: values as OptionValues<O>, positionals: parsed.positionals, io });
    },
  };
}

/** Lists commands for a help text. */
export function commandList(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n');
}

/** A command made of actions, e.g. `outbox parked|requeue|discard`: `<name> <action> [options]`. */
export function defineGroup(spec: { readonly name: string; readonly summary: string; readonly actions: readonly Command[] }): Command {
  const help = (prefix: string): string =>
    [`usage: ${prefix} ${spec.name} <action> [options]`, '', spec.summary, '', 'actions:', commandList(spec.actions), '', `Run \`${prefix} ${spec.name} <action> --help\` for an action's options.`, ''].join('\n');
  return {
    name: spec.name,
    summary: spec.summary,
    help,
    async run(argv, io, prefix) {
      const [first, ...rest] = argv;
      if (first === '--help' || first === '-h') {
        io.stdout.write(help(prefix));
        return ExitCode.ok;
      }
      if (first === undefined) throw new UsageError(`${spec.name} needs an action: ${spec.actions.map((a) => a.name).join(', ')}`);
      const action = spec.actions.find((a) => a.name === first);
      if (action === undefined) {
        throw new UsageError(`unknown ${spec.name} action ${JSON.stringify(first)}; choose one of ${spec.actions.map((a) => a.name).join(', ')}`);
      }
      return action.run(rest, io, `${prefix} ${spec.name}`);
    },
  };
}
