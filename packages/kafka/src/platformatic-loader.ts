/**
 * Loads @platformatic/kafka (ESM-only, Node.js >= 22.22) only when a consumer chooses it, through
 * Node's own `require` (which loads ES modules from 22.12 on), so kafkajs users never load it.
 * TEMPORARY: replaced by the shared optional-peer loader once it lands.
 */
import { EffectivelyError, ErrorCodes } from '@effectively/core';

/** The module, as its own types describe it. */
export type PlatformaticKafka = typeof import('@platformatic/kafka');

let loaded: PlatformaticKafka | undefined;

/** @throws EffectivelyError when Node.js is too old or the package is not installed. */
export function loadPlatformaticKafka(): Promise<PlatformaticKafka> {
  if (loaded !== undefined) return Promise.resolve(loaded);
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 22) || (major === 24 && minor < 6)) {
    return Promise.reject(new EffectivelyError(ErrorCodes.INVALID_CONFIG, `client: 'platformatic' needs Node.js >= 22.22 (this is ${process.versions.node}); upgrade Node.js or use client: 'kafkajs'.`));
  }
  try {
    // Node's own module loader, also under a test runner that replaces `require` (jest's cannot load ES modules).
    const { createRequire } = (process as unknown as { getBuiltinModule(id: 'node:module'): typeof import('node:module') }).getBuiltinModule('node:module');
    loaded = createRequire(__filename)('@platformatic/kafka') as PlatformaticKafka;
    return Promise.resolve(loaded);
  } catch (error) {
    return Promise.reject(new EffectivelyError(ErrorCodes.INVALID_CONFIG, `client: 'platformatic' needs the package @platformatic/kafka: npm install @platformatic/kafka (or use client: 'kafkajs').`, { cause: error }));
  }
}
