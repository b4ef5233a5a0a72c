import fs from 'node:fs/promises';
import path from 'node:path';
import type { ModelKind } from '../../src/entities';
import type { RunningPlatform } from '../../src/main';
import { createAdmin } from '../../src/services/users';
import { TINY_SD15 } from '../helpers/fixtures';
import { gql, ok, signUp, type TestUser } from './helpers';

/*
 * The accounts, base models and models platform tests start from. Each step goes through the API as a
 * client would, except making an admin, which the API has no way to do.
 */

/** A new admin's key. */
export async function newAdminKey(platform: RunningPlatform, email = 'admin@example.org'): Promise<string> {
  return (await createAdmin(platform.services.db, email)).secret;
}

/** The base model new models start from: the bundled one on a fresh platform. */
export async function defaultBaseModelId(platform: RunningPlatform, key: string): Promise<string> {
  return (await ok(gql(platform.url!, '{ defaultBaseModel { id } }', {}, key))).defaultBaseModel.id;
}

export interface ModelSpec {
  /** The default base model unless given. */
  baseModelId?: string;
  kind?: `${ModelKind}`;
  name?: string;
}

/** Creates a model as the holder of `key` and returns its id. */
export async function createModel(platform: RunningPlatform, key: string, spec: ModelSpec = {}): Promise<string> {
  const { kind = 'PRIVATE', name = 'm' } = spec;
  const baseModelId = spec.baseModelId ?? (await defaultBaseModelId(platform, key));
  const created = await ok(
    gql(platform.url!, 'mutation($input: CreateModelInput!) { createModel(input: $input) { id } }', { input: { name, kind, baseModelId } }, key),
  );
  return created.createModel.id;
}

export interface UserWithModel extends TestUser {
  modelId: string;
}

/** Signs a user up and creates a model of theirs (private, on the default base model, unless `spec` says otherwise). */
export async function userWithModel(platform: RunningPlatform, email: string, spec: ModelSpec = {}): Promise<UserWithModel> {
  const user = await signUp(platform.url!, email);
  return { ...user, modelId: await createModel(platform, user.key, spec) };
}

/** Uploads the tiny-sd15 fixture pack into the platform's bucket and registers it as a base model (as an admin). */
export async function registerFixturePack(platform: RunningPlatform, adminKey: string): Promise<{ id: string; architecture: string }> {
  const pack = path.join(TINY_SD15, 'pack');
  for (const entry of await fs.readdir(pack, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    await platform.services.store.put(`base-models/tiny-sd15/${path.relative(pack, file)}`, await fs.readFile(file));
  }
  const register = 'mutation { registerBaseModel(input: { name: "tiny-sd15", storageLocation: "base-models/tiny-sd15" }) { id architecture } }';
  return (await ok(gql(platform.url!, register, {}, adminKey))).registerBaseModel;
}

/** An admin's key and the tiny-sd15 fixture pack they registered. */
export async function adminWithFixturePack(platform: RunningPlatform): Promise<{ admin: string; baseModelId: string; architecture: string }> {
  const admin = await newAdminKey(platform);
  const { id, architecture } = await registerFixturePack(platform, admin);
  return { admin, baseModelId: id, architecture };
}

/** Where fine-tune tests start: an admin, the tiny-sd15 fixture pack, the public metamodel on it, and two users. */
export async function publicMetamodelWithUsers(
  platform: RunningPlatform,
): Promise<{ admin: string; baseModelId: string; metaModelId: string; a: TestUser; b: TestUser }> {
  const { admin, baseModelId } = await adminWithFixturePack(platform);
  return {
    admin,
    baseModelId,
    metaModelId: await createModel(platform, admin, { kind: 'META', name: 'public', baseModelId }),
    a: await signUp(platform.url!, 'a@example.org'),
    b: await signUp(platform.url!, 'b@example.org'),
  };
}
