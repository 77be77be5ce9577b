/**
 * Connection settings of a command, each taken from (first found) its flag, its environment
 * variable, the configuration file: Postgres URL, schema, Kafka brokers, client id, TLS, SASL.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { assertIdentifier, InvalidConfigError, type PlatformaticClientOptions } from '@effectively/core';
import type { KafkaSettings } from '@effectively/relay';
import { kafkaClientName, loadConfigFile, saslMechanism, type ConfigFile, type KafkaClientName, type SaslMechanism, type TlsFileSettings } from './config-file';
import type { OptionSpec } from './command';

/** `--config`, `--database-url`, `--schema`: for every command that touches the database. */
export const DATABASE_OPTIONS = {
  schema: { type: 'string', value: 'NAME', description: 'schema of the effectively tables (env EFFECTIVELY_SCHEMA, config "schema"); required' },
  'database-url': { type: 'string', value: 'URL', description: 'Postgres connection string (env DATABASE_URL, config "databaseUrl")' },
  config: { type: 'string', value: 'FILE', description: 'JSON configuration file (env EFFECTIVELY_CONFIG)' },
} as const satisfies Record<string, OptionSpec>;

/** `--brokers`, `--client-id`: for commands that talk to Kafka (TLS and SASL: environment or config file). */
export const KAFKA_OPTIONS = {
  brokers: { type: 'string', value: 'HOST:PORT,…', description: 'Kafka bootstrap brokers (env KAFKA_BROKERS, config "kafka.brokers")' },
  'client-id': { type: 'string', value: 'ID', description: 'Kafka client id (env KAFKA_CLIENT_ID, config "kafka.clientId")' },
} as const satisfies Record<string, OptionSpec>;

type Env = Readonly<Record<string, string | undefined>>;

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/** The configuration file named by `--config` or `EFFECTIVELY_CONFIG`, or an empty one. */
export function configFile(values: { config?: string }, env: Env): ConfigFile {
  const path = nonEmpty(values.config) ?? nonEmpty(env['EFFECTIVELY_CONFIG']);
  return path === undefined ? {} : loadConfigFile(path);
}

/** Postgres connection string: `--database-url`, `DATABASE_URL`, config `databaseUrl`. */
export function databaseUrl(values: { 'database-url'?: string }, env: Env, config: ConfigFile): string {
  const url = nonEmpty(values['database-url']) ?? nonEmpty(env['DATABASE_URL']) ?? config.databaseUrl;
  if (url === undefined) throw new InvalidConfigError('no database: set DATABASE_URL, pass --database-url postgres://… or "databaseUrl" in the --config file.');
  return url;
}

/** The schema, required: `--schema`, `EFFECTIVELY_SCHEMA`, config `schema`. Never a silent default. */
export function schemaName(values: { schema?: string }, env: Env, config: ConfigFile): string {
  const schema = nonEmpty(values.schema) ?? nonEmpty(env['EFFECTIVELY_SCHEMA']) ?? config.schema;
  if (schema === undefined) throw new InvalidConfigError('--schema is required: name the Postgres schema of the effectively tables (e.g. --schema effectively), or set EFFECTIVELY_SCHEMA.');
  return assertIdentifier(schema, 'schema');
}

/** Kafka client settings for kafkajs: brokers, client id, TLS, SASL. */
export interface KafkaConnection {
  brokers: string[];
  clientId: string | undefined;
  /** `ssl` and `sasl` for kafkajs (empty when neither is configured). */
  settings: KafkaSettings;
}

function readPem(what: string, path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new InvalidConfigError(`cannot read ${what} ${path}: ${(error as Error).message}`);
  }
}

function bool(name: string, raw: string | undefined): boolean | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (/^(true|1|yes)$/i.test(raw)) return true;
  if (/^(false|0|no)$/i.test(raw)) return false;
  throw new InvalidConfigError(`${name} must be true or false, got ${JSON.stringify(raw)}.`);
}

function tlsSettings(env: Env, file: boolean | TlsFileSettings | undefined): boolean | ConnectionOptions | undefined {
  const fromFile = typeof file === 'object' ? file : {};
  const merged: TlsFileSettings = { ...fromFile };
  const set = <K extends keyof TlsFileSettings>(key: K, value: TlsFileSettings[K] | undefined): void => {
    if (value !== undefined) merged[key] = value;
  };
  set('ca', nonEmpty(env['KAFKA_SSL_CA']));
  set('cert', nonEmpty(env['KAFKA_SSL_CERT']));
  set('key', nonEmpty(env['KAFKA_SSL_KEY']));
  set('passphrase', nonEmpty(env['KAFKA_SSL_KEY_PASSPHRASE']));
  set('servername', nonEmpty(env['KAFKA_SSL_SERVERNAME']));
  set('rejectUnauthorized', bool('KAFKA_SSL_REJECT_UNAUTHORIZED', env['KAFKA_SSL_REJECT_UNAUTHORIZED']));
  const enabled = bool('KAFKA_SSL', env['KAFKA_SSL']) ?? (file === undefined ? undefined : file !== false);
  const hasSettings = Object.keys(merged).length > 0;
  if (enabled === false) return undefined;
  if (!hasSettings) return enabled === true ? true : undefined;
  if ((merged.cert === undefined) !== (merged.key === undefined)) throw new InvalidConfigError('a TLS client certificate needs both cert and key (KAFKA_SSL_CERT and KAFKA_SSL_KEY).');
  const options: ConnectionOptions = {};
  const ca = readPem('the TLS CA file', merged.ca);
  const cert = readPem('the TLS client certificate', merged.cert);
  const key = readPem('the TLS client key', merged.key);
  if (ca !== undefined) options.ca = ca;
  if (cert !== undefined) options.cert = cert;
  if (key !== undefined) options.key = key;
  if (merged.passphrase !== undefined) options.passphrase = merged.passphrase;
  if (merged.servername !== undefined) options.servername = merged.servername;
  if (merged.rejectUnauthorized !== undefined) options.rejectUnauthorized = merged.rejectUnauthorized;
  return options;
}

type Sasl = { mechanism: 'plain'; username: string; password: string } | { mechanism: 'scram-sha-256'; username: string; password: string } | { mechanism: 'scram-sha-512'; username: string; password: string };

function saslSettings(env: Env, config: ConfigFile): Sasl | undefined {
  const file = config.kafka?.sasl;
  const rawMechanism = nonEmpty(env['KAFKA_SASL_MECHANISM']);
  const mechanism = rawMechanism === undefined ? file?.mechanism : saslMechanism('KAFKA_SASL_MECHANISM', rawMechanism);
  const username = nonEmpty(env['KAFKA_SASL_USERNAME']) ?? file?.username;
  const passwordFile = nonEmpty(env['KAFKA_SASL_PASSWORD_FILE']) ?? file?.passwordFile;
  const password = nonEmpty(env['KAFKA_SASL_PASSWORD']) ?? file?.password ?? readPem('the SASL password file', passwordFile)?.replace(/\r?\n$/, '');
  if (mechanism === undefined && username === undefined && password === undefined) return undefined;
  if (mechanism === undefined || username === undefined || password === undefined) {
    throw new InvalidConfigError('SASL needs a mechanism (plain, scram-sha-256, scram-sha-512), a username and a password: KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD (or _FILE), or "kafka.sasl" in the config file.');
  }
  const credentials = { username, password };
  const byMechanism: Record<SaslMechanism, () => Sasl> = {
    plain: () => ({ mechanism: 'plain', ...credentials }),
    'scram-sha-256': () => ({ mechanism: 'scram-sha-256', ...credentials }),
    'scram-sha-512': () => ({ mechanism: 'scram-sha-512', ...credentials }),
  };
  return byMechanism[mechanism]();
}

/** Brokers, client id, TLS and SASL from flags, environment and configuration file. */
export function kafkaConnection(values: { brokers?: string; 'client-id'?: string }, env: Env, config: ConfigFile): KafkaConnection {
  const rawBrokers = nonEmpty(values.brokers) ?? nonEmpty(env['KAFKA_BROKERS']);
  const brokers = rawBrokers === undefined ? config.kafka?.brokers : rawBrokers.split(',').map((b) => b.trim()).filter((b) => b !== '');
  if (brokers === undefined || brokers.length === 0) throw new InvalidConfigError('no Kafka brokers: set KAFKA_BROKERS=host:port[,host:port], pass --brokers or "kafka.brokers" in the --config file.');
  const ssl = tlsSettings(env, config.kafka?.ssl);
  const sasl = saslSettings(env, config);
  const settings: KafkaSettings = {};
  if (ssl !== undefined) settings.ssl = ssl;
  if (sasl !== undefined) settings.sasl = sasl;
  return { brokers, clientId: nonEmpty(values['client-id']) ?? nonEmpty(env['KAFKA_CLIENT_ID']) ?? config.kafka?.clientId, settings };
}

/** The relay's Kafka client and its settings: kafkajs's `kafka`, or the same TLS and SASL as `platformatic`. */
export type RelayClientSettings = { client: 'kafkajs'; kafka: KafkaSettings } | { client: 'platformatic'; platformatic: PlatformaticClientOptions };

const PLATFORMATIC_SASL = { plain: 'PLAIN', 'scram-sha-256': 'SCRAM-SHA-256', 'scram-sha-512': 'SCRAM-SHA-512' } as const;

/** `--client`, `EFFECTIVELY_KAFKA_CLIENT`, config `kafka.client` (default kafkajs), with the connection's TLS and SASL for that client. */
export function relayClient(values: { client?: string }, env: Env, config: ConfigFile, connection: KafkaConnection): RelayClientSettings {
  const flag = nonEmpty(values.client);
  const fromEnv = nonEmpty(env['EFFECTIVELY_KAFKA_CLIENT']);
  const name: KafkaClientName =
    flag !== undefined ? kafkaClientName('--client', flag) : fromEnv !== undefined ? kafkaClientName('EFFECTIVELY_KAFKA_CLIENT', fromEnv) : (config.kafka?.client ?? 'kafkajs');
  if (name === 'kafkajs') return { client: 'kafkajs', kafka: connection.settings };
  const platformatic: PlatformaticClientOptions = {};
  const { ssl, sasl } = connection.settings;
  if (ssl !== undefined && ssl !== false) platformatic.tls = ssl === true ? {} : { ...ssl };
  if (sasl !== undefined) {
    if (!(sasl.mechanism in PLATFORMATIC_SASL)) throw new InvalidConfigError(`SASL mechanism ${sasl.mechanism} is not supported with --client platformatic.`);
    const { username, password } = sasl as { username: string; password: string };
    platformatic.sasl = { mechanism: PLATFORMATIC_SASL[sasl.mechanism as SaslMechanism], username, password };
  }
  return { client: 'platformatic', platformatic };
}
