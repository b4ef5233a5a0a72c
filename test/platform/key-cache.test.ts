import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAdmin } from '../../src/services/users';
import { errorCode, gql, sharedServices, signUp, sqlDuring, startTestPlatform, type TestPlatform } from './helpers';

/**
 * Two API processes over one database, as in production: keys are checked against the database once,
 * then trusted in each process until a revocation or role change is announced, which reaches the other
 * process at once.
 */
describe('API keys across processes', () => {
  let first: TestPlatform;
  let second: TestPlatform;

  beforeAll(async () => {
    first = await startTestPlatform({ ROLE: 'api' });
    second = await startTestPlatform({ ROLE: 'api', ...sharedServices(first) });
  }, 120_000);
  afterAll(async () => {
    await second?.stop();
    await first?.stop();
  });

  const me = (url: string, key: string) => gql(url, '{ me { email role } }', {}, key);

  /** Polls until `check` holds, for at most 5 s: far less than the time a verdict is trusted. */
  const soon = async (check: () => Promise<boolean>) => {
    const until = Date.now() + 5000;
    while (!(await check())) {
      if (Date.now() > until) throw new Error('the change did not arrive within 5 s');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  it('answers repeated requests, with a valid key or a bad one, without SQL', async () => {
    const { key } = await signUp(first.url, 'cached@example.org');
    const unknown = `${key.slice(0, 12)}${'A'.repeat(key.length - 12)}`;
    await soon(async () => (await sqlDuring(second.services.db, () => me(second.url, key))).length === 0);
    await soon(async () => (await sqlDuring(second.services.db, () => me(second.url, unknown))).length === 0);

    const statements = await sqlDuring(second.services.db, async () => {
      for (let i = 0; i < 20; i++) {
        expect((await me(second.url, key)).data?.me.email).toBe('cached@example.org');
        expect(errorCode(await me(second.url, unknown))).toBe('UNAUTHENTICATED');
      }
    });
    expect(statements).toEqual([]);
  });

  it('refuses a key revoked in another process at once, and sees a promotion', async () => {
    const { key } = await signUp(first.url, 'revoked@example.org');
    const spare = (await gql(first.url, 'mutation { createApiKey(name: "spare") { secret apiKey { id } } }', {}, key)).data!.createApiKey;
    expect((await me(second.url, spare.secret)).data?.me.role).toBe('USER');
    await soon(async () => (await sqlDuring(second.services.db, () => me(second.url, spare.secret))).length === 0);

    await createAdmin(first.services.db, 'revoked@example.org');
    await soon(async () => (await me(second.url, spare.secret)).data?.me.role === 'ADMIN');

    expect((await gql(first.url, 'mutation($id: ID!) { revokeApiKey(id: $id) { revoked } }', { id: spare.apiKey.id }, key)).data?.revokeApiKey.revoked).toBe(true);
    expect(errorCode(await me(first.url, spare.secret))).toBe('UNAUTHENTICATED'); // the revoking process, immediately
    await soon(async () => errorCode(await me(second.url, spare.secret)) === 'UNAUTHENTICATED');
    expect((await me(second.url, key)).data?.me.email).toBe('revoked@example.org');
  });
});
