import { readFileSync } from 'node:fs';
import path from 'node:path';

/** This package's version, from its package.json (one directory above `src/` and `dist/`). */
export function cliVersion(): string {
  const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}
