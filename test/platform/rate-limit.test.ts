import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signUp as signUpInDb } from '../../src/services/users';
import { errorCode, gql, startTestPlatform, wsGql, type TestPlatform } from './helpers';

/** MAX_REQUESTS_PER_MINUTE_PER_KEY: each key's HTTP requests, counted apart from every other key's. */
describe('per-key rate limit', () => {
  let platform: TestPlatform;
  let a: string;
  let b: string;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api', MAX_REQUESTS_PER_MINUTE_PER_KEY: '5' });
    // Made in the database: sign-ups over HTTP would count against the address's own budget.
    a = (await signUpInDb(platform.services.db, true, 'limited-a@example.org')).secret;
    b = (await signUpInDb(platform.services.db, true, 'limited-b@example.org')).secret;
  });
  afterAll(() => platform?.stop());

  it('answers a key’s requests past the limit with 429 RATE_LIMITED and Retry-After, and no one else’s', async () => {
    for (let i = 0; i < 5; i++) expect(errorCode(await gql(platform.url, '{ me { email } }', {}, a))).toBeUndefined();
    const response = await fetch(platform.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${a}` },
      body: JSON.stringify({ query: '{ me { email } }' }),
    });
    expect(response.status).toBe(429);
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    // The IETF draft's headers, the policy and what is left of it.
    expect(response.headers.get('ratelimit-policy')).toMatch(/^"\d+-in-1min"; q=5; w=60/);
    expect(response.headers.get('ratelimit')).toMatch(/; r=0; t=\d+$/);
    expect(((await response.json()) as { errors: { extensions: { code: string } }[] }).errors[0].extensions.code).toBe('RATE_LIMITED');
    // Downloads share the key's budget.
    expect((await fetch(new URL('/images/00000000-0000-4000-8000-000000000000', platform.url), { headers: { authorization: `Bearer ${a}` } })).status).toBe(429);

    // Another key, and a subscription over WebSocket, are not held back.
    expect((await gql(platform.url, '{ me { email } }', {}, b)).data?.me.email).toBe('limited-b@example.org');
    expect((await wsGql(platform.url, '{ me { email } }', {}, a)).data?.me.email).toBe('limited-a@example.org');
  });
});
