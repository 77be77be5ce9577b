/**
 * `npm run test:pack` (run by .ci/run after `npm run build`): packs every published package,
 * installs the tarballs into a fresh CommonJS project and a fresh ESM project ("type": "module",
 * moduleResolution nodenext) outside the repository, typechecks a small service against them
 * with strict, exactOptionalPropertyTypes and noPropertyAccessFromIndexSignature, runs it
 * against the real broker and Postgres, and runs the `effectively` command from the install.
 *
 * The two projects use different peer versions (CommonJS: kysely 0.28, pino 10, Express 5,
 * Fastify 5; ESM: kysely 0.27, pino 8, Express 4.18, Fastify 4), the ranges the packages declare.
 * Kafka and Postgres: KAFKA_BROKERS / DATABASE_URL, else started as the tests start them.
 * PACK_TEST_KEEP=1 keeps the temporary directory.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createDatabase } from '@effectively/core';
import { startKafka, startPostgres, uniqueName } from '@effectively/testkit';
import { sql } from 'kysely';

const run = promisify(execFile);
const root = path.resolve(__dirname, '..');
const PACKAGES = ['migrations', 'packages/core', 'packages/kafka', 'packages/relay', 'packages/http', 'packages/cli', 'packages/testkit'];
const started = Date.now();

function say(text: string): void {
  process.stdout.write(`[pack-test ${((Date.now() - started) / 1000).toFixed(1)} s] ${text}\n`);
}

async function sh(cwd: string, command: string, args: string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(command, args, { cwd, env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}

async function must(cwd: string, command: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await sh(cwd, command, args, env);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} (in ${cwd}) exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function expect(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

interface Manifest {
  name: string;
  version: string;
  main?: string;
  types?: string;
  exports?: Record<string, unknown>;
  license?: string;
  files?: string[];
  engines?: Record<string, string>;
  repository?: unknown;
  peerDependencies?: Record<string, string>;
}

interface Variant {
  name: 'cjs' | 'esm';
  type: 'commonjs' | 'module';
  compilerOptions: Record<string, string>;
  peers: Record<string, string>;
}

const STRICT = { strict: true, exactOptionalPropertyTypes: true, noPropertyAccessFromIndexSignature: true, noUncheckedIndexedAccess: true, skipLibCheck: false, esModuleInterop: true, target: 'ES2022', lib: ['ES2022', 'DOM'], types: ['node'], outDir: 'dist', rootDir: 'src' };

const VARIANTS: Variant[] = [
  { name: 'cjs', type: 'commonjs', compilerOptions: { module: 'commonjs', moduleResolution: 'node10' }, peers: { kysely: '~0.28.0', pino: '^10.0.0', express: '^5.0.0', '@types/express': '^5.0.0', fastify: '^5.0.0' } },
  { name: 'esm', type: 'module', compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext' }, peers: { kysely: '~0.27.0', pino: '^8.0.0', express: '~4.18.0', '@types/express': '~4.17.0', fastify: '^4.0.0' } },
];

async function packAll(dir: string): Promise<Map<string, { file: string; manifest: Manifest }>> {
  const out = JSON.parse(await must(root, 'npm', ['pack', '--json', '--pack-destination', dir, ...PACKAGES.flatMap((p) => ['-w', p])])) as Array<{ name: string; filename: string; files: Array<{ path: string }> }>;
  const packed = new Map<string, { file: string; manifest: Manifest }>();
  for (const p of out) {
    const files = p.files.map((f) => f.path);
    const manifest = JSON.parse(readFileSync(path.join(root, PACKAGES.find((w) => JSON.parse(readFileSync(path.join(root, w, 'package.json'), 'utf8')).name === p.name) as string, 'package.json'), 'utf8')) as Manifest;
    for (const needed of ['package.json', 'LICENSE', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/index.d.ts.map', 'dist/index.d.mts']) expect(files.includes(needed), `${p.name}: the tarball lacks ${needed}`);
    expect(!files.some((f) => /(^|\/)test\/|\.test\.|tsbuildinfo/.test(f)), `${p.name}: the tarball holds test files or build info: ${files.filter((f) => /(^|\/)test\/|\.test\.|tsbuildinfo/.test(f)).join(', ')}`);
    expect(manifest.main === 'dist/index.js' && manifest.types === 'dist/index.d.ts' && manifest.exports !== undefined, `${p.name}: main/types/exports must point at dist`);
    expect(manifest.license === 'Apache-2.0' && manifest.engines?.['node'] !== undefined && manifest.repository !== undefined, `${p.name}: license, engines and repository are required`);
    packed.set(p.name, { file: path.join(dir, p.filename), manifest });
  }
  expect(packed.size === PACKAGES.length, `packed ${packed.size} of ${PACKAGES.length} packages`);
  return packed;
}

async function prepare(work: string, variant: Variant, packed: Map<string, { file: string; manifest: Manifest }>): Promise<string> {
  const dir = path.join(work, variant.name);
  mkdirSync(path.join(dir, 'src'), { recursive: true });
  const rootManifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
  const dependencies: Record<string, string> = {
    ...Object.fromEntries([...packed].map(([name, p]) => [name, `file:${p.file}`])),
    kafkajs: '^2.2.4',
    pg: '^8.11.0',
    'prom-client': '^15.0.0',
    ...variant.peers,
  };
  const devDependencies = { typescript: rootManifest.devDependencies['typescript'] as string, '@types/node': rootManifest.devDependencies['@types/node'] as string };
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `pack-test-${variant.name}`, version: '1.0.0', private: true, type: variant.type, dependencies, devDependencies }, null, 2));
  writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { ...STRICT, ...variant.compilerOptions }, include: ['src'] }, null, 2));
  copyFileSync(path.join(__dirname, 'pack-test', 'service.ts'), path.join(dir, 'src', 'service.ts'));
  copyFileSync(path.join(__dirname, 'pack-test', 'check-exports.cjs'), path.join(dir, 'check-exports.cjs'));
  await must(dir, 'npm', ['install', '--no-audit', '--no-fund', '--loglevel=error']);
  return dir;
}

async function verify(dir: string, variant: Variant, packed: Map<string, { file: string; manifest: Manifest }>, env: Record<string, string>): Promise<void> {
  const tag = `[${variant.name}]`;
  // Peers as the variant asked, one copy of each.
  const kysely = JSON.parse(readFileSync(path.join(dir, 'node_modules', 'kysely', 'package.json'), 'utf8')) as { version: string };
  const copies = (await sh(dir, 'npm', ['ls', 'kysely', '--all', '--parseable'])).stdout.trim().split('\n').filter((l) => l !== '');
  expect(copies.length === 1, `${tag} expected one kysely, found ${copies.join(', ')}`);
  say(`${tag} installed; kysely ${kysely.version}`);

  say(`${tag} ${(await must(dir, 'node', ['check-exports.cjs', ...packed.keys()])).trim().split('\n').length} packages: same named exports from require() and import()`);
  await must(dir, 'npx', ['tsc', '-p', '.']);
  say(`${tag} service typechecks (strict, exactOptionalPropertyTypes, noPropertyAccessFromIndexSignature, skipLibCheck false)`);
  say(`${tag} ${(await must(dir, 'node', ['dist/service.js'], { ...env, SERVICE_SCHEMA_PREFIX: `pack_${variant.name}` })).trim()}`);

  const version = (await must(dir, 'npx', ['effectively', '--version'])).trim();
  expect(version === packed.get('@effectively/cli')?.manifest.version, `${tag} effectively --version printed ${version}`);
  const help = await must(dir, 'npx', ['effectively', '--help']);
  expect(/migrate/.test(help) && /relay/.test(help), `${tag} effectively --help: ${help}`);
  const schema = uniqueName(`pack_cli_${variant.name}`);
  const missing = await sh(dir, 'npx', ['effectively', 'migrate'], env);
  expect(missing.code === 2 && /--schema is required/.test(missing.stderr), `${tag} effectively migrate without --schema: exit ${missing.code}, ${missing.stderr}`);
  const migrated = await must(dir, 'npx', ['effectively', 'migrate', '--schema', schema], env);
  expect(migrated.startsWith(`schema ${schema}: applied 0001`), `${tag} effectively migrate: ${migrated}`);
  await dropSchema(env['DATABASE_URL'] as string, schema);
  say(`${tag} npx effectively --version (${version}), --help, migrate --schema ${schema}: ok`);
}

async function dropSchema(url: string, schema: string): Promise<void> {
  const database = createDatabase({ connectionString: url, max: 1 });
  try {
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(database.db);
  } finally {
    await database.destroy();
  }
}

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(os.tmpdir(), 'effectively-pack-'));
  const [kafka, postgres] = await Promise.all([startKafka(), startPostgres()]);
  let ok = false;
  try {
    const env = { DATABASE_URL: postgres.url, KAFKA_BROKERS: kafka.brokers.join(',') };
    mkdirSync(path.join(work, 'tarballs'));
    const packed = await packAll(path.join(work, 'tarballs'));
    say(`packed ${[...packed.keys()].join(', ')} into ${work}`);
    const dirs = await Promise.all(VARIANTS.map((v) => prepare(work, v, packed)));
    await Promise.all(VARIANTS.map((variant, i) => verify(dirs[i] as string, variant, packed, env)));
    ok = true;
    say('passed');
  } finally {
    await Promise.allSettled([kafka.stop(), postgres.stop()]);
    if (ok && process.env['PACK_TEST_KEEP'] !== '1') rmSync(work, { recursive: true, force: true });
    else say(`kept ${work}`);
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`pack-test failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
