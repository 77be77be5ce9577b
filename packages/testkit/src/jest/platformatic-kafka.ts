/**
 * `@platformatic/kafka` for code running under jest (mapped in the jest config). The package is
 * an ES module; jest's CommonJS module system cannot `require` it, Node.js ≥ 22.12 can: this
 * loads it with Node's own `require`, outside jest's module registry (it is then shared by the
 * test files of a worker, like a built-in module).
 */
import type * as Platformatic from '@platformatic/kafka';

const nodeModule = process.getBuiltinModule('node:module');
const loaded: typeof Platformatic = nodeModule.createRequire(__filename)('@platformatic/kafka');
export = loaded;
