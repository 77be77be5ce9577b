/**
 * The relay as a worker process: runs an {@link OutboxRelay} and serves `/metrics`
 * (Prometheus text), `/healthz` and `/readyz` (JSON; 200 while the relay can deliver now,
 * 503 otherwise) and `/livez` (200 while its publish loop runs; restart it when 503).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '@effectively/core';
import type { OutboxRelay, RelayHealth } from '@effectively/relay';
import type { Registry } from 'prom-client';

/** A running status server. */
export interface StatusServer {
  /** The port it listens on (useful when started on port 0). */
  readonly port: number;
  close(): Promise<void>;
}

/** The status code of a health route: readiness for `/healthz` and `/readyz`, liveness for `/livez`; undefined for other paths. */
export function healthStatus(path: string, health: RelayHealth): number | undefined {
  if (path === '/healthz' || path === '/readyz') return health.ready ? 200 : 503;
  if (path === '/livez') return health.live ? 200 : 503;
  return undefined;
}

/** Serves `/metrics` from `registry` and `/healthz`, `/readyz`, `/livez` from `relay.health()` on `host:port`. */
export async function startStatusServer(relay: OutboxRelay, registry: Registry, options: { port: number; host: string; logger: Logger }): Promise<StatusServer> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const health = relay.health();
    const status = healthStatus(url ?? '/', health);
    if (status !== undefined) {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(health));
      return;
    }
    if (url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => {
          options.logger.warn({ err }, 'collecting metrics failed');
          res.writeHead(500).end();
        },
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz, /readyz or /livez\n');
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  options.logger.info({ host: options.host, port }, 'relay status server listening (/metrics, /healthz, /readyz, /livez)');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
