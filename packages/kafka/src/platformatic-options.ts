/** Connection settings of the @platformatic/kafka client (types only: nothing here loads it). */
import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';

/** A value, or a function giving it (e.g. a rotating password). */
export type PlatformaticCredential = string | (() => string | Promise<string>);

/**
 * Extra @platformatic/kafka connection settings (the `kafka` option is kafkajs-typed and is not
 * used by this client). Passed to the client's consumer, admin and fetch connections as they are.
 */
export interface PlatformaticClientOptions {
  /** TLS (node:tls options); `{}` for TLS with the system CAs. */
  tls?: TlsConnectionOptions;
  /** Server name for TLS SNI; `true` uses the broker's host. */
  tlsServerName?: string | boolean;
  sasl?: {
    mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512' | 'OAUTHBEARER';
    username?: PlatformaticCredential;
    password?: PlatformaticCredential;
    /** OAUTHBEARER token. */
    token?: PlatformaticCredential;
  };
  /** Time to open a connection; client default 5 s. */
  connectTimeout?: number;
  /** Time to wait for a response; client default 30 s. Keep it above `fetchMaxWaitMs`. */
  requestTimeout?: number;
  /** Attempts of a failed request before it fails; default 10 (the consumer retries after that too). */
  retries?: number;
  /** Delay between those attempts; default 500 ms. */
  retryDelay?: number;
  /** Broker rack, for fetching from the nearest replica. */
  clientRack?: string;
}
