import { InvalidConfigError } from '@effectively/core';

/** Parsed command line: the command, positional words after it, `--flag value` options and bare `--switch`es. */
export interface ParsedArgs {
  command: string | undefined;
  /** Words before the first option, e.g. `parked` in `effectively outbox parked`. */
  positionals: string[];
  options: Map<string, string>;
  switches: Set<string>;
}

/** Parses `cmd --key value --key=value --switch`. */
export function parseArgs(argv: string[]): ParsedArgs {
  const [command, ...rest] = argv;
  const options = new Map<string, string>();
  const switches = new Set<string>();
  const positionals: string[] = [];
  let i = 0;
  for (; i < rest.length && !(rest[i] as string).startsWith('--'); i++) positionals.push(rest[i] as string);
  for (; i < rest.length; i++) {
    const arg = rest[i] as string;
    if (!arg.startsWith('--')) throw new InvalidConfigError(`Unexpected argument ${JSON.stringify(arg)}; options look like --name value.`);
    const eq = arg.indexOf('=');
    if (eq > 0) options.set(arg.slice(2, eq), arg.slice(eq + 1));
    else if (rest[i + 1] !== undefined && !(rest[i + 1] as string).startsWith('--')) options.set(arg.slice(2), rest[++i] as string);
    else switches.add(arg.slice(2));
  }
  return { command, positionals, options, switches };
}
