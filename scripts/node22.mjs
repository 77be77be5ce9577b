#!/usr/bin/env node
// Runs a command under Node.js 22 (the @platformatic/kafka client needs Node >= 22.22), from any Node:
//
//   node scripts/node22.mjs <command> [args...]   run <command> with that Node first on PATH
//   node scripts/node22.mjs --print               print the path of that Node binary
//
// When the Node running this script is already >= 22.22, that Node is used. Otherwise the Node 22
// binary comes from the npm registry, as the package `node-<platform>-<arch>` (it carries the binary
// in bin/node), installed with the npm at hand into .cache/node22 (git-ignored) and reused while its
// version is the pinned one. It is never a dependency in a package.json: its `bin` is `node`, which
// would shadow the project's Node in every npm script.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The Node release installed from the registry; at least {@link MINIMUM}. */
export const PINNED = '22.23.5';
/** The oldest Node 22 that @platformatic/kafka supports (its `engines`). */
export const MINIMUM = [22, 22, 0];

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cacheDir = path.join(root, '.cache', 'node22');

function atLeast(version, minimum) {
  const parts = version.replace(/^v/, '').split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    if ((parts[i] ?? 0) !== minimum[i]) return (parts[i] ?? 0) > minimum[i];
  }
  return true;
}

function fail(message) {
  process.stderr.write(`node22: ${message}\n`);
  process.exit(2);
}

function registryPackage() {
  const platform = { linux: 'linux', darwin: 'darwin' }[process.platform];
  const arch = { x64: 'x64', arm64: 'arm64' }[process.arch];
  if (platform === undefined || arch === undefined) {
    fail(`no Node 22 package for ${process.platform}-${process.arch} in this script; run it with Node ${MINIMUM.join('.')}+ yourself (that Node is then used as is).`);
  }
  return `node-${platform}-${arch}`;
}

function versionOf(binary) {
  if (!existsSync(binary)) return undefined;
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** The path of a Node >= 22.22 binary, installed from the npm registry when needed. */
export function node22Binary() {
  if (atLeast(process.versions.node, MINIMUM)) return process.execPath;
  const pkg = registryPackage();
  const binaryIn = (dir) => path.join(dir, 'node_modules', pkg, 'bin', 'node');
  if (versionOf(binaryIn(cacheDir)) === `v${PINNED}`) return binaryIn(cacheDir);

  // Install beside the cache and rename it into place, so a concurrent run never sees half a binary.
  const staging = `${cacheDir}.${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  writeFileSync(path.join(staging, 'package.json'), JSON.stringify({ name: 'effectively-node22', private: true }));
  process.stderr.write(`node22: installing ${pkg}@${PINNED} from the npm registry into ${path.relative(root, cacheDir)}\n`);
  const npm = process.env.npm_execpath;
  const [command, prefix] = npm !== undefined && npm.endsWith('.js') ? [process.execPath, [npm]] : ['npm', []];
  const r = spawnSync(command, [...prefix, 'install', '--prefix', staging, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--ignore-scripts', `${pkg}@${PINNED}`], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, npm_config_workspaces: '', npm_config_workspace: '', npm_config_global: '' },
  });
  if (r.status !== 0 || versionOf(binaryIn(staging)) !== `v${PINNED}`) {
    rmSync(staging, { recursive: true, force: true });
    fail(`could not install ${pkg}@${PINNED} from the npm registry (npm exited ${r.status}); check the registry is reachable (npm config get registry), or run with Node ${MINIMUM.join('.')}+ yourself.`);
  }
  rmSync(cacheDir, { recursive: true, force: true });
  try {
    renameSync(staging, cacheDir);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    if (versionOf(binaryIn(cacheDir)) !== `v${PINNED}`) throw error; // another run put it there first
  }
  return binaryIn(cacheDir);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [command, ...args] = process.argv.slice(2);
  if (command === undefined || command === '--help') {
    fail('usage: node scripts/node22.mjs <command> [args...] | --print');
  }
  const binary = node22Binary();
  if (command === '--print') {
    process.stdout.write(`${binary}\n`);
  } else {
    // That Node first on PATH (for `#!/usr/bin/env node` scripts such as jest and for children
    // spawned as `node`), then the project's .bin, as in an npm script.
    const PATH = [path.dirname(binary), path.join(root, 'node_modules', '.bin'), process.env.PATH ?? ''].join(path.delimiter);
    const child = spawn(command === 'node' ? binary : command, args, { stdio: 'inherit', env: { ...process.env, PATH } });
    for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
    child.on('error', (error) => fail(`${command}: ${error.message}`));
    child.on('exit', (code, signal) => {
      process.exit(signal !== null ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1));
    });
  }
}
