import { startedServices } from './global-setup';

/** jest `globalTeardown`: stops what the global setup started. */
export default async function globalTeardown(): Promise<void> {
  const services = startedServices();
  if (services === undefined) return;
  await Promise.allSettled([services.kafka.stop(), services.postgres.stop()]);
}
