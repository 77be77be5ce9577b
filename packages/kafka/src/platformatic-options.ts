/**
 * Connection settings of the @platformatic/kafka client (types only: nothing here loads it): the
 * consumer's `platformatic` option takes core's settings, as the relay's does. The consumer's
 * defaults: `retries` 10, `retryDelay` 500 ms (after them the consumer retries too).
 */
export type { PlatformaticClientOptions, PlatformaticCredential } from '@effectively/core';
