import { createDatabase, createLogger, InvalidConfigError, loggerOption, silentLogger } from '../src';

// Every component's `logger` option is checked when the component is made, with a message that
// says what to pass; a factory passed uncalled used to fail later with "logger.bindings is not a function".
describe('the logger option', () => {
  it('accepts a pino logger and stands in a silent one for undefined', () => {
    const given = createLogger('test', 'silent');
    expect(loggerOption(given, 'x.logger')).toBe(given);
    expect(loggerOption(undefined, 'x.logger').level).toBe('silent');
  });

  it.each([
    ['silentLogger uncalled', silentLogger, /x\.logger must be a pino logger, got a function: call it/],
    ['console', console, /x\.logger must be a pino logger \(it lacks child, bindings, fatal\)/],
    ['a plain object', {}, /it lacks child, bindings, trace, debug, info, warn, error, fatal/],
    ['null', null, /x\.logger must be a pino logger/],
  ])('refuses %s with InvalidConfigError', (_name, value, message) => {
    expect(() => loggerOption(value, 'x.logger')).toThrow(InvalidConfigError);
    expect(() => loggerOption(value, 'x.logger')).toThrow(message);
  });

  it('createDatabase refuses it before opening a pool', () => {
    expect(() => createDatabase({ connectionString: 'postgres://127.0.0.1:1/none', logger: silentLogger as never })).toThrow(/createDatabase options\.logger must be a pino logger/);
  });
});
