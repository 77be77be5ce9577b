// After `tsc -b`: writes an ES-module twin (`.d.mts`) of every declaration file in each package's
// dist/. The packages run as CommonJS; the `import` condition of their exports map points at
// these twins so that in an ESM project (moduleResolution node16/nodenext) the library's types
// resolve kysely, kafkajs, … through the same `import` condition as the application's own code
// (one kysely type, not its CommonJS and ESM declarations side by side: "Property '#private'
// refers to a different member"). Relative specifiers get the `.mjs` extension ESM requires.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const packages = ['migrations', ...readdirSync(path.join(root, 'packages')).map((p) => path.join('packages', p))];

function* declarations(dir) {
  for (const entry of readdirSync(dir)) {
    const file = path.join(dir, entry);
    if (statSync(file).isDirectory()) yield* declarations(file);
    else if (entry.endsWith('.d.ts')) yield file;
  }
}

function rewrite(file, specifier) {
  if (!specifier.startsWith('./') && !specifier.startsWith('../')) return specifier;
  const target = path.resolve(path.dirname(file), specifier);
  if (existsSync(`${target}.d.ts`)) return `${specifier}.mjs`;
  if (existsSync(path.join(target, 'index.d.ts'))) return `${specifier}/index.mjs`;
  throw new Error(`${file}: cannot resolve ${specifier}`);
}

let written = 0;
for (const pkg of packages) {
  const dist = path.join(root, pkg, 'dist');
  if (!existsSync(dist)) continue;
  for (const file of declarations(dist)) {
    const text = readFileSync(file, 'utf8').replace(/(\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"]+)\2/g, (_, lead, quote, spec) => `${lead}${quote}${rewrite(file, spec)}${quote}`);
    const out = file.replace(/\.d\.ts$/, '.d.mts');
    writeFileSync(out, text.replace(/\/\/# sourceMappingURL=(.*)\.d\.ts\.map/, '//# sourceMappingURL=$1.d.mts.map'));
    const map = `${file}.map`;
    if (existsSync(map)) {
      const json = JSON.parse(readFileSync(map, 'utf8'));
      json.file = path.basename(out);
      writeFileSync(`${out}.map`, JSON.stringify(json));
    }
    written++;
  }
}
process.stdout.write(`esm-declarations: ${written} .d.mts files\n`);
