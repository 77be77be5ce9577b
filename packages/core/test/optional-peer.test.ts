import { assertOptionalPeer, importOptionalPeer, nodeVersionAtLeast, OptionalPeerError, PLATFORMATIC_KAFKA } from '@effectively/core';

/** The loader of optional peers: a typed error on a Node.js too old or without the package, the package where it runs. */
describe('importOptionalPeer', () => {
  const supported = nodeVersionAtLeast(PLATFORMATIC_KAFKA.minNode ?? '0.0.0');

  (supported ? it.skip : it)('refuses @platformatic/kafka on Node.js < 22.22 without loading it, saying what to do', async () => {
    const error = await importOptionalPeer({ ...PLATFORMATIC_KAFKA, from: __filename }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OptionalPeerError);
    expect(error).toMatchObject({ code: 'OPTIONAL_PEER_UNAVAILABLE', reason: 'node-version', peer: '@platformatic/kafka' });
    expect((error as Error).message).toMatch(/needs Node\.js ≥ 22\.22\.0 .*npm install @platformatic\/kafka/);
    expect(() => assertOptionalPeer({ ...PLATFORMATIC_KAFKA, from: __filename })).toThrow(OptionalPeerError);
  });

  (supported ? it : it.skip)('loads @platformatic/kafka (an ES module) on Node.js ≥ 22.22', async () => {
    const kafka = await importOptionalPeer<{ Producer: unknown; Consumer: unknown }>({ ...PLATFORMATIC_KAFKA, from: __filename });
    expect(typeof kafka.Producer).toBe('function');
    expect(typeof kafka.Consumer).toBe('function');
    expect(() => assertOptionalPeer({ ...PLATFORMATIC_KAFKA, from: __filename })).not.toThrow();
  });

  it('names a package that is not installed and the install command', async () => {
    const peer = { name: '@effectively/no-such-package', feature: 'the test feature', from: __filename };
    const error = await importOptionalPeer(peer).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'OPTIONAL_PEER_UNAVAILABLE', reason: 'not-installed', peer: '@effectively/no-such-package' });
    expect((error as Error).message).toContain('npm install @effectively/no-such-package');
    expect(() => assertOptionalPeer(peer)).toThrow(/npm install @effectively\/no-such-package/);
  });

  it('compares versions numerically', () => {
    expect(nodeVersionAtLeast('22.22.0', '22.23.5')).toBe(true);
    expect(nodeVersionAtLeast('22.22.0', 'v22.9.0')).toBe(false);
    expect(nodeVersionAtLeast('22.22.0', '24.0.0')).toBe(true);
    expect(nodeVersionAtLeast('22.22.0', '20.19.0')).toBe(false);
  });
});
