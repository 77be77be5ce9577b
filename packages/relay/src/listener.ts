/**
 * Wakes the relay when a writer commits: `LISTEN effectively_outbox` on a connection of its own.
 * Notifications carry only the schema name, never row data; they are a hint, the poll is the
 * fallback. A lost connection is logged, reported as not listening, and re-opened with backoff.
 */
import { OUTBOX_CHANNEL, type Logger } from '@effectively/core';
import pg from 'pg';
import { backoffMs } from './backoff';

export interface NotifyListenerOptions {
  databaseUrl: string;
  schema: string;
  applicationName: string;
  logger: Logger;
  onNotify: () => void;
  onStateChange: (listening: boolean) => void;
}

export class NotifyListener {
  private client: pg.Client | undefined;
  private closed = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private listeningNow = false;
  /** Times the connection was (re)opened after a loss. */
  reconnects = 0;

  constructor(private readonly options: NotifyListenerOptions) {}

  get listening(): boolean {
    return this.listeningNow;
  }

  /** Opens the connection; failures are retried in the background, never thrown. */
  async start(): Promise<void> {
    await this.connect();
  }

  private setListening(value: boolean): void {
    if (value === this.listeningNow) return;
    this.listeningNow = value;
    this.options.onStateChange(value);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const o = this.options;
    // TCP keepalive after 10 s idle, so a half-open connection is noticed in about a minute, not hours.
    const client = new pg.Client({ connectionString: o.databaseUrl, application_name: o.applicationName, keepAlive: true, keepAliveInitialDelayMillis: 10_000 });
    this.client = client;
    let lost = false;
    const onLost = (err?: Error): void => {
      if (lost) return;
      lost = true;
      this.setListening(false);
      if (this.closed) return;
      o.logger.warn({ err }, 'outbox listener connection lost; polling until it is back');
      // Writers may have committed while we were deaf: poll at once.
      o.onNotify();
      this.scheduleReconnect();
    };
    client.on('error', onLost);
    client.on('end', () => onLost());
    client.on('notification', (message) => {
      if (message.channel === OUTBOX_CHANNEL && message.payload === o.schema) o.onNotify();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${OUTBOX_CHANNEL}`);
      if (this.closed) {
        await client.end().catch(() => undefined);
        return;
      }
      if (this.failures > 0 || this.reconnects > 0) o.logger.info({ afterFailures: this.failures }, 'outbox listener connected again');
      this.failures = 0;
      this.setListening(true);
      o.onNotify();
    } catch (err) {
      lost = true;
      this.setListening(false);
      await client.end().catch(() => undefined);
      if (this.closed) return;
      o.logger.warn({ err }, 'outbox listener could not connect; polling until it can');
      this.scheduleReconnect();
    }
  }

  private scheduleReconnect(): void {
    if (this.closed || this.retryTimer !== undefined) return;
    this.failures++;
    const delay = backoffMs(this.failures, 250, 10_000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.reconnects++;
      void this.connect();
    }, delay);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.setListening(false);
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) await client.end().catch(() => undefined);
  }
}
