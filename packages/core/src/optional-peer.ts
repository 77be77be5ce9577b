/**
 * Loads an optional peer dependency on first use, so an application that never asks for it never
 * loads it (nor needs it installed). A missing package, a Node.js too old for it, or a package
 * that fails to load becomes an {@link OptionalPeerError} that says what to install or upgrade.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import { EffectivelyError, ErrorCodes } from './errors';

/** Why an optional peer could not be loaded. */
export type OptionalPeerFailure = 'node-version' | 'not-installed' | 'load-failed';

/** The peer to load and what needs it. */
export interface OptionalPeer {
  /** The package name, e.g. `@platformatic/kafka`. */
  name: string;
  /** What needs it, for the message, e.g. `client: 'platformatic'`. */
  feature: string;
  /** Oldest Node.js the package runs on (`major.minor.patch`); checked before loading. */
  minNode?: string;
  /** What the application can do instead, for the message, e.g. `or use client: 'kafkajs'`. */
  instead?: string;
  /**
   * A file the package is resolved from (the caller's module, so the package is looked up where
   * the caller's own dependencies are); default: this module.
   */
  from?: string;
}

/** An optional peer dependency is missing, needs a newer Node.js, or failed to load. */
export class OptionalPeerError extends EffectivelyError {
  /** The package that could not be loaded. */
  readonly peer: string;
  /** Why. */
  readonly reason: OptionalPeerFailure;

  constructor(peer: OptionalPeer, reason: OptionalPeerFailure, cause?: unknown) {
    const install = `npm install ${peer.name}`;
    const instead = peer.instead === undefined ? '' : `, ${peer.instead}`;
    const what =
      reason === 'node-version'
        ? `needs Node.js ≥ ${peer.minNode ?? '?'} (this process runs ${process.version}) and ${peer.name}: run it on Node.js ${peer.minNode ?? '?'} or newer; ${install}${instead}.`
        : reason === 'not-installed'
          ? `needs the optional peer dependency ${peer.name}, which is not installed: ${install}${peer.minNode === undefined ? '' : ` (it needs Node.js ≥ ${peer.minNode})`}${instead}.`
          : `could not load ${peer.name} (${cause instanceof Error ? cause.message : String(cause)}): reinstall it (${install})${instead}.`;
    super(ErrorCodes.OPTIONAL_PEER_UNAVAILABLE, `${peer.feature} ${what}`, cause === undefined ? {} : { cause });
    this.peer = peer.name;
    this.reason = reason;
  }
}

/** Whether `version` (default: this process's Node.js) is at least `minimum` (`major.minor.patch`). */
export function nodeVersionAtLeast(minimum: string, version: string = process.versions.node): boolean {
  const have = version.replace(/^v/, '').split('.').map(Number);
  const want = minimum.replace(/^v/, '').split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const h = have[i] ?? 0;
    const w = want[i] ?? 0;
    if (h !== w) return h > w;
  }
  return true;
}

function isNotFound(error: unknown, name: string): boolean {
  const e = error as { code?: unknown; message?: unknown } | null;
  return typeof e === 'object' && e !== null && e.code === 'MODULE_NOT_FOUND' && typeof e.message === 'string' && e.message.includes(`'${name}'`);
}

function requireFor(peer: OptionalPeer): NodeJS.Require {
  // CommonJS (what this package is compiled to): a require relative to the caller or this module.
  // Bundled into an ES module there is no `require`: resolve from the application's directory.
  return peer.from !== undefined ? createRequire(peer.from) : typeof require === 'function' ? require : createRequire(path.join(process.cwd(), 'package.json'));
}

/**
 * Checks, without loading it, that the optional peer can be loaded here: this Node.js is recent
 * enough and the package resolves. For options validated up front (a client chosen by name),
 * so a missing package fails the constructor instead of every later connection attempt.
 *
 * @throws {@link OptionalPeerError} (code `OPTIONAL_PEER_UNAVAILABLE`) saying what to install or upgrade.
 */
export function assertOptionalPeer(peer: OptionalPeer): void {
  if (peer.minNode !== undefined && !nodeVersionAtLeast(peer.minNode)) throw new OptionalPeerError(peer, 'node-version');
  try {
    requireFor(peer).resolve(peer.name);
  } catch (error) {
    throw new OptionalPeerError(peer, isNotFound(error, peer.name) ? 'not-installed' : 'load-failed', error);
  }
}

/**
 * Loads the optional peer `peer.name` and returns its module namespace, typed as `T` (give the
 * package's own types, `typeof import('…')`, or a narrower interface of what you use). Checks the
 * Node.js version first, so an unsupported Node never evaluates the package. ES-module-only
 * packages load too: on Node.js ≥ 22.12 `require` loads an ES module without top-level await.
 *
 * @throws {@link OptionalPeerError} (code `OPTIONAL_PEER_UNAVAILABLE`) saying what to install or upgrade.
 */
export async function importOptionalPeer<T>(peer: OptionalPeer): Promise<T> {
  if (peer.minNode !== undefined && !nodeVersionAtLeast(peer.minNode)) throw new OptionalPeerError(peer, 'node-version');
  try {
    return requireFor(peer)(peer.name) as T;
  } catch (error) {
    throw new OptionalPeerError(peer, isNotFound(error, peer.name) ? 'not-installed' : 'load-failed', error);
  }
}

/**
 * `@platformatic/kafka`, the optional second Kafka client of `@effectively/kafka` and
 * `@effectively/relay` (`client: 'platformatic'`): ES-module-only, Node.js ≥ 22.22 (its `engines`).
 */
export const PLATFORMATIC_KAFKA: Readonly<OptionalPeer> = Object.freeze({
  name: '@platformatic/kafka',
  feature: "client: 'platformatic'",
  minNode: '22.22.0',
  instead: "or use client: 'kafkajs' (the default, any Node.js ≥ 20.19)",
});

/** A value, or a function giving it (e.g. a rotating password). */
export type PlatformaticCredential = string | (() => string | Promise<string>);

/**
 * Connection settings of the `@platformatic/kafka` client (types only: nothing here loads it),
 * for `client: 'platformatic'`; the kafkajs-typed `kafka` option is not used by that client.
 */
export interface PlatformaticClientOptions {
  /** TLS (`node:tls` connect options); `{}` for TLS with the system CAs. */
  tls?: TlsConnectionOptions;
  /** Server name for TLS SNI; `true` uses the broker's host. */
  tlsServerName?: string | boolean;
  /** SASL authentication. */
  sasl?: {
    mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512' | 'OAUTHBEARER';
    username?: PlatformaticCredential;
    password?: PlatformaticCredential;
    /** OAUTHBEARER token. */
    token?: PlatformaticCredential;
  };
  /** Time to open a connection. */
  connectTimeout?: number;
  /** Time to wait for a response. */
  requestTimeout?: number;
  /** Attempts of a failed request before it fails. */
  retries?: number;
  /** Delay between those attempts, ms. */
  retryDelay?: number;
  /** Broker rack, for fetching from the nearest replica. */
  clientRack?: string;
}
