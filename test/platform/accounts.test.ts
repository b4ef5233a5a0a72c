import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAdmin } from '../../src/services/users';
import { errorCode, gql, signUp, startTestPlatform, wsGql, type TestPlatform } from './helpers';

const run = promisify(execFile);

describe('accounts and API keys', () => {
  let platform: TestPlatform;
  let url: string;
  let databaseUrl: string;

  beforeAll(async () => {
    platform = await startTestPlatform();
    url = platform.url;
    databaseUrl = platform.databaseUrl;
  });
  afterAll(() => platform?.stop());

  it('admin:create prints a key that answers { me { email } } over HTTP and WebSocket', async () => {
    const { stdout } = await run('npx', ['tsx', 'scripts/admin-create.ts', '--email', 'Root@Example.org'], {
      env: { ...process.env, DATABASE_URL: databaseUrl },
    });
    const key = stdout.trim().split('\n').at(-1)!;
    expect(key).toMatch(/^bd_/);

    const http = await gql(url, '{ me { email role } }', {}, key);
    expect(http.data?.me).toEqual({ email: 'root@example.org', role: 'ADMIN' });
    const ws = await wsGql(url, '{ me { email role } }', {}, key);
    expect(ws.data?.me).toEqual({ email: 'root@example.org', role: 'ADMIN' });
  });

  it('admin:create promotes an existing user and gives them a new key', async () => {
    const { key } = await signUp(url, 'promoted@example.org');
    const { user, secret } = await createAdmin(platform.services.db, 'promoted@example.org');
    expect(user.role).toBe('ADMIN');
    expect(secret).not.toBe(key);
    expect((await gql(url, '{ me { role } }', {}, key)).data?.me.role).toBe('ADMIN');
  });

  it('signs up, and refuses a second account with the same email', async () => {
    const { key } = await signUp(url, 'alice@example.org');
    expect((await gql(url, '{ me { email role } }', {}, key)).data?.me).toEqual({
      email: 'alice@example.org',
      role: 'USER',
    });
    const again = await gql(url, 'mutation { signUp(email: "ALICE@example.org") { secret } }');
    expect(errorCode(again)).toBe('CONFLICT');
    expect(errorCode(await gql(url, 'mutation { signUp(email: "not-an-email") { secret } }'))).toBe('BAD_USER_INPUT');
  });

  it('creates, lists and revokes keys; the secret is shown once and stored only hashed', async () => {
    const { key } = await signUp(url, 'bob@example.org');
    const created = await gql(url, 'mutation { createApiKey(name: "laptop") { secret apiKey { id prefix name } } }', {}, key);
    const { secret, apiKey } = created.data!.createApiKey;
    expect(secret.startsWith(`${apiKey.prefix}_`)).toBe(true);

    const listed = await gql(url, '{ apiKeys { nodes { id name prefix revoked lastUsedAt } } }', {}, secret);
    expect(listed.data?.apiKeys.nodes.map((k: { name: string }) => k.name)).toEqual(['laptop', 'default']);
    // The new key was used by this very request.
    const usedAgo = Date.now() - Date.parse(listed.data?.apiKeys.nodes[0].lastUsedAt);
    expect(usedAgo).toBeGreaterThanOrEqual(0);
    expect(usedAgo).toBeLessThan(30_000);
    expect(JSON.stringify(listed)).not.toContain(secret);

    const rows: Record<string, unknown>[] = await platform.services.db.query('SELECT * FROM api_key WHERE id = $1', [
      apiKey.id,
    ]);
    const stored = JSON.stringify(rows);
    expect(stored).not.toContain(secret.slice(apiKey.prefix.length + 1));
    expect(rows[0].secretHash).toBe(createHash('sha256').update(secret).digest('hex'));

    const revoked = await gql(url, 'mutation($id: ID!) { revokeApiKey(id: $id) { revoked revokedAt } }', { id: apiKey.id }, key);
    expect(revoked.data?.revokeApiKey.revoked).toBe(true);

    const refused = await gql(url, '{ me { email } }', {}, secret);
    expect(refused.status).toBe(401);
    expect(errorCode(refused)).toBe('UNAUTHENTICATED');
    await expect(wsGql(url, '{ me { email } }', {}, secret)).rejects.toThrow('4403');
    // The other key still works.
    expect((await gql(url, '{ me { email } }', {}, key)).data?.me.email).toBe('bob@example.org');
  });

  it.each([
    ['garbage', 'Bearer nonsense'],
    ['no Bearer scheme', 'bd_abcdefgh_0123456789012345678901234567890123456789012'],
    ['unknown key of the right shape', `Bearer bd_abcdefgh_${'A'.repeat(43)}`],
  ])('refuses a malformed key (%s) over HTTP and WebSocket', async (_name, header) => {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: header },
      body: JSON.stringify({ query: '{ health { ok } }' }),
    });
    expect(response.status).toBe(401);
    const body = (await response.json()) as { errors: { extensions: { code: string } }[] };
    expect(body.errors[0].extensions.code).toBe('UNAUTHENTICATED');
    await expect(wsGql(url, '{ health { ok } }', {}, header.replace(/^Bearer /, ''))).rejects.toThrow('4403');
  });

  it('lets anonymous callers reach only signUp and health', async () => {
    expect((await gql(url, '{ health { ok } }')).data?.health.ok).toBe(true);
    expect((await wsGql(url, '{ health { ok } }')).data?.health.ok).toBe(true);
    const introspection = await gql(url, '{ __schema { queryType { fields { name args { name type { kind ofType { name } } } } } } }');
    const schema = introspection.data!.__schema;
    const open = new Set(['health', 'signUp']);
    for (const field of schema.queryType.fields.filter((f: { name: string }) => !open.has(f.name))) {
      const args = (field.args as Arg[])
        .filter((a) => a.type.kind === 'NON_NULL')
        .map((a) => `${a.name}: ${placeholder(a)}`)
        .join(', ');
      const query = `{ ${field.name}${args ? `(${args})` : ''} { __typename } }`;
      expect.soft(errorCode(await gql(url, query)), field.name).toBe('UNAUTHENTICATED');
    }
    // Mutations are called anonymously with valid arguments in tenancy.test.ts.
  });

  it('turns sign-up off by configuration', async () => {
    const closed = await startTestPlatform({
      DATABASE_URL: databaseUrl,
      S3_ENDPOINT: platform.s3.endpoint,
      S3_BUCKET: platform.s3.bucket,
      S3_ACCESS_KEY_ID: platform.s3.accessKeyId,
      S3_SECRET_ACCESS_KEY: platform.s3.secretAccessKey,
      SIGNUP_ENABLED: 'false',
    });
    try {
      expect(errorCode(await gql(closed.url, 'mutation { signUp(email: "carol@example.org") { secret } }'))).toBe(
        'FORBIDDEN',
      );
    } finally {
      await closed.stop();
    }
  });
});

/** A literal of the right shape for an argument, so the query gets past validation to authorization. */
interface Arg {
  name: string;
  type: { kind: string; ofType?: { name: string } };
}

function placeholder(arg: Arg): string {
  return arg.type.ofType?.name === 'ID' ? '"00000000-0000-4000-8000-000000000000"' : '"x"';
}
