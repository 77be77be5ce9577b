// Every package loads with require() and import(), and ESM sees the same named exports as CommonJS.
'use strict';
const packages = process.argv.slice(2);
(async () => {
  let failed = false;
  for (const name of packages) {
    const cjs = Object.keys(require(name)).filter((k) => k !== '__esModule').sort();
    const esm = Object.keys(await import(name)).filter((k) => k !== 'default' && k !== 'module.exports').sort();
    const missing = cjs.filter((k) => !esm.includes(k));
    if (cjs.length === 0 || missing.length > 0) {
      failed = true;
      process.stderr.write(`${name}: ${cjs.length} CommonJS exports; missing as ESM named exports: ${missing.join(', ')}\n`);
    } else process.stdout.write(`${name}: ${cjs.length} named exports from require() and import()\n`);
  }
  process.exit(failed ? 1 : 0);
})();
