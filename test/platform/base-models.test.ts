import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_TINY_SD, createRandomPack } from '../../src/engine';
import { errorCode, gql, ok, signUp, startTestPlatform, type TestPlatform } from './helpers';
import { newAdminKey } from './setup';

const DEFAULT = '{ defaultBaseModel { id name isDefault resolution } baseModels { name isDefault } }';
const SET_DEFAULT = 'mutation($id: ID!) { setDefaultBaseModel(id: $id) { id name isDefault } }';

/** Which base model is the platform's default: the bundled one from the first start, until an admin picks another. */
describe('the default base model', () => {
  let platform: TestPlatform;
  let admin: string;
  let user: string;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    admin = await newAdminKey(platform);
    ({ key: user } = await signUp(platform.url, 'user@example.org'));
  });
  afterAll(async () => {
    await platform?.stop();
  });

  it('is the bundled base model on a fresh platform, for every signed-in user', async () => {
    expect(await ok(gql(platform.url, DEFAULT, {}, user))).toEqual({
      defaultBaseModel: { id: expect.any(String), name: 'bundled-tiny-sd', isDefault: true, resolution: 64 },
      baseModels: [{ name: 'bundled-tiny-sd', isDefault: true }],
    });
    expect(errorCode(await gql(platform.url, DEFAULT))).toBe('UNAUTHENTICATED');
  });

  it('moves to the base model an admin names, and stays one', async () => {
    for (const [file, bytes] of createRandomPack(BUNDLED_TINY_SD, 1)) await platform.services.store.put(`base-models/second/${file}`, bytes);
    const second = (await ok(gql(platform.url, 'mutation { registerBaseModel(input: { name: "second", storageLocation: "base-models/second" }) { id isDefault } }', {}, admin))).registerBaseModel;
    expect(second.isDefault).toBe(false);
    const before = await ok(gql(platform.url, DEFAULT, {}, user));

    // Refused callers and unknown ids change nothing.
    expect(errorCode(await gql(platform.url, SET_DEFAULT, { id: second.id }, user))).toBe('FORBIDDEN');
    expect(errorCode(await gql(platform.url, SET_DEFAULT, { id: '00000000-0000-0000-0000-000000000000' }, admin))).toBe('NOT_FOUND');
    expect(errorCode(await gql(platform.url, SET_DEFAULT, { id: 'nope' }, admin))).toBe('BAD_USER_INPUT');
    expect(await ok(gql(platform.url, DEFAULT, {}, user))).toEqual(before);

    expect((await ok(gql(platform.url, SET_DEFAULT, { id: second.id }, admin))).setDefaultBaseModel).toEqual({ id: second.id, name: 'second', isDefault: true });
    expect(await ok(gql(platform.url, DEFAULT, {}, user))).toEqual({
      defaultBaseModel: { id: second.id, name: 'second', isDefault: true, resolution: 64 },
      baseModels: [{ name: 'bundled-tiny-sd', isDefault: false }, { name: 'second', isDefault: true }],
    });
    // Admins racing to change it leave exactly one default.
    const bundledId = before.defaultBaseModel.id;
    const raced = await Promise.all(Array.from({ length: 20 }, (_, i) => gql(platform.url, SET_DEFAULT, { id: i % 2 ? second.id : bundledId }, admin)));
    expect(raced.map(errorCode)).toEqual(raced.map(() => undefined));
    const [{ count }] = await platform.services.db.query('SELECT count(*)::int AS count FROM base_model WHERE "isDefault"');
    expect(count).toBe(1);
  });
});
