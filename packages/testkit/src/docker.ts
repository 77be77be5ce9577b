import fs from 'node:fs';

/**
 * True when a Docker engine answers, so testcontainers can be used. A cheap check for a
 * socket or `DOCKER_HOST` comes first, so machines without Docker pay nothing.
 */
export async function dockerAvailable(env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  if (env['TESTCONTAINERS_DISABLED'] === 'true') return false;
  const socket = env['DOCKER_HOST'] ?? (fs.existsSync('/var/run/docker.sock') ? 'unix:///var/run/docker.sock' : undefined);
  if (socket === undefined) return false;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}
