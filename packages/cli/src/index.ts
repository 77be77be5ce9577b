export { run } from './cli';
export { COMMANDS } from './commands';
export { defineCommand, defineGroup, ExitCode, UsageError, type Command, type CommandIo, type CommandInput, type CommandSpec, type OptionSpec, type OptionValues } from './command';
export { loadConfigFile, parseConfig, SASL_MECHANISMS, type ConfigFile, type SaslMechanism } from './config-file';
export { kafkaConnection, databaseUrl, schemaName, configFile, DATABASE_OPTIONS, KAFKA_OPTIONS, type KafkaConnection } from './settings';
export { startStatusServer, type StatusServer } from './relay-worker';
