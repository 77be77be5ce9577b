#!/usr/bin/env node
// The `effectively` command: runs the compiled CLI (dist/bin.js). Inside the repository,
// `npm run build` compiles it first.
'use strict';
try {
  require.resolve('../dist/bin.js');
} catch {
  process.stderr.write('effectively: dist/bin.js is missing; in the effectively repository run `npm run build` first\n');
  process.exit(1);
}
require('../dist/bin.js');
