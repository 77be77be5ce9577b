// Before `tsc -b`: removes a package's `.tsbuildinfo` when its dist/ is gone. tsc -b trusts the
// build-info file, so after `rm -rf dist` alone it would call the package up to date and write
// nothing (and every package that imports it would then fail to find its declarations).
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const packages = ['migrations', ...readdirSync(path.join(root, 'packages')).map((p) => path.join('packages', p))];
for (const pkg of packages) {
  const info = path.join(root, pkg, '.tsbuildinfo');
  if (existsSync(info) && !existsSync(path.join(root, pkg, 'dist'))) rmSync(info);
}
