import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signUp } from '../../src/services/users';
import { errorCode, gql, startTestPlatform, wsGql, type TestPlatform } from './helpers';

/** What must never reach a client: SQL, stack frames, file paths. */
function expectNoInternals(body: unknown) {
  const text = JSON.stringify(body);
  for (const leak of ['relation', 'SELECT', 'QueryFailedError', 'stacktrace', '    at ', 'node_modules', '/src/', process.cwd()]) {
    expect(text).not.toContain(leak);
  }
}

describe('API errors and limits', () => {
  let platform: TestPlatform;
  let url: string;
  let key: string;

  beforeAll(async () => {
    platform = await startTestPlatform({ QUERY_MAX_DEPTH: '2', QUERY_MAX_COST: '60', MAX_BODY_BYTES: '4000' });
    url = platform.url;
    // Sign-up's own selection would exceed the tiny depth limit set here.
    key = (await signUp(platform.services.db, true, 'errors@example.org')).secret;
  });
  afterAll(() => platform?.stop());

  it('reports a malformed id as BAD_USER_INPUT without reaching the database', async () => {
    const response = await gql(url, '{ model(id: "1; DROP TABLE model") { id } }', {}, key);
    expect(errorCode(response)).toBe('BAD_USER_INPUT');
    expectNoInternals(response);
  });

  it('reports an unknown id as NOT_FOUND', async () => {
    const response = await gql(url, '{ job(id: "00000000-0000-4000-8000-000000000000") { id } }', {}, key);
    expect(errorCode(response)).toBe('NOT_FOUND');
  });

  it('hides a database failure behind INTERNAL_SERVER_ERROR, over HTTP and WebSocket', async () => {
    const { db } = platform.services;
    await db.query('ALTER TABLE job RENAME TO job_moved');
    try {
      const http = await gql(url, '{ jobs { totalCount } }', {}, key);
      expect(errorCode(http)).toBe('INTERNAL_SERVER_ERROR');
      expect(http.errors?.[0].message).toBe('Internal server error');
      expectNoInternals(http);
      const ws = await wsGql(url, '{ jobs { totalCount } }', {}, key);
      expect(errorCode(ws)).toBe('INTERNAL_SERVER_ERROR');
      expectNoInternals(ws);
    } finally {
      await db.query('ALTER TABLE job_moved RENAME TO job');
    }
    expect((await gql(url, '{ jobs { totalCount } }', {}, key)).data?.jobs.totalCount).toBe(0);
  });

  it('rejects queries deeper than QUERY_MAX_DEPTH', async () => {
    expect((await gql(url, '{ models { id } }', {}, key)).errors).toBeUndefined();
    const deep = await gql(url, '{ models { baseModel { name } } }', {}, key);
    expect(errorCode(deep)).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(deep.errors?.[0].message).toMatch(/depth/i);
    // Fragments do not hide depth.
    const viaFragments = await gql(url, '{ models { ...M } } fragment M on Model { baseModel { name } }', {}, key);
    expect(errorCode(viaFragments)).toBe('GRAPHQL_VALIDATION_FAILED');
  });

  it('rejects queries costlier than QUERY_MAX_COST', async () => {
    const fields = Array.from({ length: 12 }, (_, i) => `m${i}: models { id name kind }`).join(' ');
    const response = await gql(url, `{ ${fields} }`, {}, key);
    expect(errorCode(response)).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(response.errors?.[0].message).toMatch(/cost/i);
  });

  it('reports invalid documents and variables with codes over HTTP and WebSocket', async () => {
    for (const send of [gql, wsGql]) {
      // graphql-armor parses before Apollo does, so over HTTP a syntax error is a validation failure.
      expect(['GRAPHQL_PARSE_FAILED', 'GRAPHQL_VALIDATION_FAILED']).toContain(errorCode(await send(url, '{ me { email ', {}, key)));
      expect(errorCode(await send(url, '{ me { password } }', {}, key)), send.name).toBe('GRAPHQL_VALIDATION_FAILED');
      const badVariable = await send(url, 'query($id: ID!) { job(id: $id) { id } }', { id: { not: 'an id' } }, key);
      expect(errorCode(badVariable), send.name).toBe('BAD_USER_INPUT');
      expectNoInternals(badVariable);
    }
  });

  it('does not suggest field names', async () => {
    const response = await gql(url, '{ mee { email } }', {}, key);
    expect(errorCode(response)).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(JSON.stringify(response)).not.toContain('Did you mean');
  });

  it('refuses a body over MAX_BODY_BYTES with a JSON 413', async () => {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ query: `{ me { email } } # ${'x'.repeat(5000)}` }),
    });
    expect(response.status).toBe(413);
    const body = (await response.json()) as { errors: { extensions: { code: string } }[] };
    expect(body.errors[0].extensions.code).toBe('PAYLOAD_TOO_LARGE');
    expectNoInternals(body);
  });

  it('answers malformed JSON with a JSON 400, not an HTML stack trace', async () => {
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query": ' });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { errors: { extensions: { code: string } }[] };
    expect(body.errors[0].extensions.code).toBe('BAD_REQUEST');
    expectNoInternals(body);
  });
});
