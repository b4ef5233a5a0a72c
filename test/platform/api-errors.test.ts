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
    platform = await startTestPlatform({ QUERY_MAX_DEPTH: '3', QUERY_MAX_COST: '60', MAX_BODY_BYTES: '4000' });
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
    expect((await gql(url, '{ models(first: 2) { nodes { id } } }', {}, key)).errors).toBeUndefined();
    const deep = await gql(url, '{ models(first: 2) { nodes { baseModel { name } } } }', {}, key);
    expect(errorCode(deep)).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(deep.errors?.[0].message).toMatch(/depth/i);
    // Fragments do not hide depth.
    const viaFragments = await gql(url, '{ models(first: 2) { nodes { ...M } } } fragment M on Model { baseModel { name } }', {}, key);
    expect(errorCode(viaFragments)).toBe('GRAPHQL_VALIDATION_FAILED');
  });

  it('rejects queries costlier than QUERY_MAX_COST, counting each connection once per row of its page', async () => {
    // A page of 2 models with 3 fields costs 1 + 2 x (1 + 3) = 9, so 6 such aliases fit in 60 and 7 do not.
    const aliases = (n: number, first: string) => `{ ${Array.from({ length: n }, (_, i) => `m${i}: models${first} { nodes { id name kind } }`).join(' ')} }`;
    expect((await gql(url, aliases(6, '(first: 2)'), {}, key)).errors).toBeUndefined();
    for (const [query, variables] of [
      [aliases(7, '(first: 2)'), {}],
      // The default page (20) and a page size passed as a variable count too.
      ['{ models { nodes { id name } } }', {}],
      ['query($n: Int) { models(first: $n) { nodes { id name kind } } }', { n: 50 }],
    ] as const) {
      for (const send of [gql, wsGql]) {
        const response = await send(url, query, variables, key);
        expect(errorCode(response), `${send.name} ${query}`).toBe('GRAPHQL_VALIDATION_FAILED');
        expect(response.errors?.[0].message).toMatch(/cost/i);
      }
    }
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

  it('does not suggest names, over HTTP or WebSocket', async () => {
    for (const send of [gql, wsGql]) {
      const response = await send(url, '{ mee { email } }', {}, key);
      expect(errorCode(response), send.name).toBe('GRAPHQL_VALIDATION_FAILED');
      expect((response as { errors: { message: string }[] }).errors[0].message, send.name).toBe('Cannot query field "mee" on type "Query".');
      const badEnum = await send(url, 'query($k: ModelKind) { models(kind: $k) { nodes { id } } }', { k: 'PRIVATE_METAA' }, key);
      expect(errorCode(badEnum), send.name).toBe('BAD_USER_INPUT');
      expect(JSON.stringify(badEnum), send.name).not.toContain('Did you mean');
    }
  });

  it('stops parsing a query past 2,000 tokens, over HTTP or WebSocket', async () => {
    // `{a}` is three tokens in three bytes (this platform takes bodies of 4,000); many operations parse, then fail validation.
    const operations = (n: number) => '{a}'.repeat(n);
    for (const send of [gql, wsGql]) {
      const parsed = await send(url, operations(660), {}, key);
      expect(errorCode(parsed), send.name).toBe('GRAPHQL_VALIDATION_FAILED');
      expect(JSON.stringify(parsed), send.name).not.toContain('tokens');
      const tooLong = await send(url, operations(700), {}, key);
      expect(['GRAPHQL_PARSE_FAILED', 'GRAPHQL_VALIDATION_FAILED'], send.name).toContain(errorCode(tooLong));
      expect(JSON.stringify(tooLong), send.name).toContain('2000 tokens');
    }
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

  it('answers JSON that is not an object or array with a JSON 400, as body-parser’s strict mode did', async () => {
    for (const body of ['"{ me { email } }"', '42', 'null']) {
      const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-8' }, body });
      expect(response.status, body).toBe(400);
      expect(((await response.json()) as { errors: { extensions: { code: string } }[] }).errors[0].extensions.code).toBe('BAD_REQUEST');
    }
  });

  it('answers malformed JSON with a JSON 400, not an HTML stack trace', async () => {
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query": ' });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { errors: { extensions: { code: string } }[] };
    expect(body.errors[0].extensions.code).toBe('BAD_REQUEST');
    expectNoInternals(body);
  });

  it('refuses a bad key before GraphQL runs, with the same 401 on the JSON path as through express', async () => {
    const refusal = async (init: RequestInit, target = url) => {
      const response = await fetch(target, init);
      return { status: response.status, type: response.headers.get('content-type'), body: await response.json() };
    };
    const headers = { authorization: `Bearer ${key.slice(0, -4)}AAAA` };
    const json = await refusal({ method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ me { email } }' }) });
    // GET goes through express and Apollo's own context handling.
    const viaExpress = await refusal({ headers: { ...headers, 'apollo-require-preflight': 'true' } }, `${url}?query=${encodeURIComponent('{ me { email } }')}`);
    expect(json).toEqual(viaExpress);
    expect(json.status).toBe(401);
    expect(json.body).toEqual({ errors: [{ message: expect.any(String), extensions: { code: 'UNAUTHENTICATED' } }] });
  });
});
