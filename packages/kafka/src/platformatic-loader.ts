/**
 * Loads @platformatic/kafka (ESM-only, Node.js >= 22.22) when a consumer chooses it, so kafkajs
 * users never load it (nor need it installed).
 */
import { importOptionalPeer, PLATFORMATIC_KAFKA } from '@effectively/core';
import type * as Platformatic from '@platformatic/kafka';

/** The module, as its own types describe it. */
export type PlatformaticKafka = typeof Platformatic;

/**
 * Resolved from this package, where its optional peer dependency is declared.
 *
 * @throws OptionalPeerError (code `OPTIONAL_PEER_UNAVAILABLE`) when Node.js is too old or the package is not installed.
 */
export function loadPlatformaticKafka(): Promise<PlatformaticKafka> {
  return importOptionalPeer<PlatformaticKafka>({ ...PLATFORMATIC_KAFKA, from: __filename });
}
