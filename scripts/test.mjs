#!/usr/bin/env node
// `npm test`: the whole suite on kafkajs under this Node (20.19+), then the test files listed in
// jest.platformatic.config.ts again on @platformatic/kafka under Node 22 (scripts/node22.mjs
// installs it from the npm registry when this Node is older). Jest arguments go to both runs, so
// `npm test -- packages/relay/test/publish.test.ts` runs that file on each client it is listed for.
//
//   node scripts/test.mjs [--client kafkajs|platformatic] [jest args...]
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
let only;
const at = args.indexOf('--client');
if (at !== -1) {
  only = args[at + 1];
  args.splice(at, 2);
  if (only !== 'kafkajs' && only !== 'platformatic') {
    process.stderr.write(`test: --client must be kafkajs or platformatic, got ${JSON.stringify(only)}\n`);
    process.exit(2);
  }
}
const jest = path.join(root, 'node_modules', 'jest', 'bin', 'jest.js');
const selects = args.some((a) => !a.startsWith('-'));
const runs = [
  { client: 'kafkajs', command: [process.execPath, jest, ...args] },
  // A path filter may select none of the listed files: that is not a failure of this run.
  { client: 'platformatic', command: [process.execPath, path.join(root, 'scripts', 'node22.mjs'), 'node', jest, '--config', path.join(root, 'jest.platformatic.config.ts'), ...(selects ? ['--passWithNoTests'] : []), ...args] },
].filter((run) => only === undefined || run.client === only);

let failed = 0;
for (const run of runs) {
  process.stderr.write(`\n[test] ${run.client === 'kafkajs' ? `the suite on kafkajs, Node ${process.version}` : 'the parametrised tests on @platformatic/kafka, Node 22'}\n`);
  const r = spawnSync(run.command[0], run.command.slice(1), { cwd: root, stdio: 'inherit', env: { ...process.env, EFFECTIVELY_TEST_CLIENT: run.client } });
  if (r.status !== 0) failed++;
  if (r.signal === 'SIGINT' || r.signal === 'SIGTERM') break;
}
process.exit(failed === 0 ? 0 : 1);
