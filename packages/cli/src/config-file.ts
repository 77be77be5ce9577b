/**
 * The optional JSON configuration file (`--config FILE` or `EFFECTIVELY_CONFIG`): connection
 * settings for Postgres and Kafka, so secrets and certificates need not be on the command line.
 *
 * ```json
 * {
 *   "databaseUrl": "postgres://relay@db:5432/orders",
 *   "schema": "effectively",
 *   "kafka": {
 *     "brokers": ["b-1.kafka:9096", "b-2.kafka:9096"],
 *     "clientId": "orders-relay",
 *     "client": "kafkajs",
 *     "ssl": { "ca": "/etc/kafka/ca.pem", "cert": "/etc/kafka/client.pem", "key": "/etc/kafka/client.key" },
 *     "sasl": { "mechanism": "scram-sha-512", "username": "relay", "passwordFile": "/run/secrets/kafka" }
 *   }
 * }
 * ```
 */
import { readFileSync } from 'node:fs';
import { InvalidConfigError } from '@effectively/core';

/** The Kafka clients the relay runs on (see the relay's `client` option). */
export const KAFKA_CLIENTS = ['kafkajs', 'platformatic'] as const;
export type KafkaClientName = (typeof KAFKA_CLIENTS)[number];

/** A Kafka client name, or an error naming the setting. */
export function kafkaClientName(where: string, value: unknown): KafkaClientName {
  if (typeof value === 'string' && (KAFKA_CLIENTS as readonly string[]).includes(value)) return value as KafkaClientName;
  throw new InvalidConfigError(`${where} must be one of ${KAFKA_CLIENTS.join(', ')}, got ${JSON.stringify(value)}.`);
}

/** SASL mechanisms the CLI accepts (kafkajs names). */
export const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[number];

/** TLS settings; file paths, read when the command starts. */
export interface TlsFileSettings {
  /** PEM file of the CA(s) to trust instead of the system's. */
  ca?: string;
  /** PEM client certificate (mutual TLS). */
  cert?: string;
  /** PEM private key of the client certificate. */
  key?: string;
  /** Passphrase of the key. */
  passphrase?: string;
  /** Server name to verify, when it differs from the broker host. */
  servername?: string;
  /** `false` turns certificate verification off (testing only). Default `true`. */
  rejectUnauthorized?: boolean;
}

/** SASL settings. */
export interface SaslFileSettings {
  mechanism: SaslMechanism;
  username: string;
  password?: string;
  /** A file holding the password (e.g. a mounted secret); trailing newline ignored. */
  passwordFile?: string;
}

/** The configuration file's shape. Every key is optional; unknown keys are errors. */
export interface ConfigFile {
  databaseUrl?: string;
  schema?: string;
  kafka?: {
    brokers?: string[];
    clientId?: string;
    /** The Kafka client of the relay: `kafkajs` (default) or `platformatic` (Node.js ≥ 22.22, `npm install @platformatic/kafka`). */
    client?: KafkaClientName;
    /** `true`: TLS with the system's CAs; an object: TLS with these files. */
    ssl?: boolean | TlsFileSettings;
    sasl?: SaslFileSettings;
  };
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function only(where: string, value: Json, keys: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!keys.includes(key)) throw new InvalidConfigError(`${where}: unknown key ${JSON.stringify(key)}; allowed: ${keys.join(', ')}.`);
  }
}

function str(where: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw new InvalidConfigError(`${where} must be a non-empty string.`);
  return value;
}

/** `value` without its undefined properties (optional properties are absent, never `undefined`). */
function defined<T extends object>(value: { [K in keyof T]: T[K] | undefined }): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

function tls(where: string, value: unknown): boolean | TlsFileSettings | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  if (!isObject(value)) throw new InvalidConfigError(`${where} must be true, false or an object { ca, cert, key, passphrase, servername, rejectUnauthorized }.`);
  only(where, value, ['ca', 'cert', 'key', 'passphrase', 'servername', 'rejectUnauthorized']);
  const reject = value['rejectUnauthorized'];
  if (reject !== undefined && typeof reject !== 'boolean') throw new InvalidConfigError(`${where}.rejectUnauthorized must be true or false.`);
  return defined<TlsFileSettings>({
    ca: str(`${where}.ca`, value['ca']),
    cert: str(`${where}.cert`, value['cert']),
    key: str(`${where}.key`, value['key']),
    passphrase: str(`${where}.passphrase`, value['passphrase']),
    servername: str(`${where}.servername`, value['servername']),
    rejectUnauthorized: reject,
  });
}

/** Checks a SASL mechanism name (case-insensitive). */
export function saslMechanism(where: string, value: string): SaslMechanism {
  const lower = value.toLowerCase();
  const found = SASL_MECHANISMS.find((m) => m === lower);
  if (found === undefined) throw new InvalidConfigError(`${where} must be one of ${SASL_MECHANISMS.join(', ')}, got ${JSON.stringify(value)}.`);
  return found;
}

function sasl(where: string, value: unknown): SaslFileSettings | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value)) throw new InvalidConfigError(`${where} must be an object { mechanism, username, password | passwordFile }.`);
  only(where, value, ['mechanism', 'username', 'password', 'passwordFile']);
  const mechanism = str(`${where}.mechanism`, value['mechanism']);
  const username = str(`${where}.username`, value['username']);
  if (mechanism === undefined || username === undefined) throw new InvalidConfigError(`${where} needs mechanism and username.`);
  return defined<SaslFileSettings>({
    mechanism: saslMechanism(`${where}.mechanism`, mechanism),
    username,
    password: str(`${where}.password`, value['password']),
    passwordFile: str(`${where}.passwordFile`, value['passwordFile']),
  });
}

/** Validates a parsed configuration object. */
export function parseConfig(where: string, value: unknown): ConfigFile {
  if (!isObject(value)) throw new InvalidConfigError(`${where} must hold a JSON object.`);
  only(where, value, ['databaseUrl', 'schema', 'kafka']);
  const kafka = value['kafka'];
  let kafkaSettings: ConfigFile['kafka'];
  if (kafka !== undefined) {
    if (!isObject(kafka)) throw new InvalidConfigError(`${where}: kafka must be an object.`);
    only(`${where}: kafka`, kafka, ['brokers', 'clientId', 'client', 'ssl', 'sasl']);
    const brokers = kafka['brokers'];
    if (brokers !== undefined && (!Array.isArray(brokers) || brokers.length === 0 || !brokers.every((b) => typeof b === 'string' && b !== ''))) {
      throw new InvalidConfigError(`${where}: kafka.brokers must be a list of "host:port" strings.`);
    }
    kafkaSettings = defined<NonNullable<ConfigFile['kafka']>>({
      brokers: brokers as string[] | undefined,
      clientId: str(`${where}: kafka.clientId`, kafka['clientId']),
      client: kafka['client'] === undefined ? undefined : kafkaClientName(`${where}: kafka.client`, kafka['client']),
      ssl: tls(`${where}: kafka.ssl`, kafka['ssl']),
      sasl: sasl(`${where}: kafka.sasl`, kafka['sasl']),
    });
  }
  return defined<ConfigFile>({ databaseUrl: str(`${where}: databaseUrl`, value['databaseUrl']), schema: str(`${where}: schema`, value['schema']), kafka: kafkaSettings });
}

/** Reads and validates the configuration file at `path`. */
export function loadConfigFile(path: string): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new InvalidConfigError(`cannot read the configuration file ${path}: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InvalidConfigError(`the configuration file ${path} is not valid JSON: ${(error as Error).message}`);
  }
  return parseConfig(`configuration file ${path}`, json);
}
