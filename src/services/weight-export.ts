import { randomUUID } from 'node:crypto';
import { buffer } from 'node:stream/consumers';
import { pack as tarPack } from 'tar-stream';
import type { DataSource } from 'typeorm';
import { LessThan } from 'typeorm';
import { z } from 'zod';
import {
  fromFloat32, parseLoraFile, parseUNetWeights, serializeLora, serializeSafetensors, serializeUNet, type LoraLayer, type StableDiffusionModels, type StoredTensor,
} from '../engine';
import { ModelKind, ModelVersion, WeightExport, WeightFormat, type User } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { loadBaseModelPack } from './base-models';
import { badInput, forbidden, notFound } from './errors';
import { getModel } from './models';
import { parseId, parseInput } from './validate';
import { versionWeights, type VersionWeights } from './versions';
import { isAdmin } from './viewer';

/**
 * Weights out: a model version's weights as the files other tools load, built for the model's owner,
 * stored under `exports/` and downloaded from an authenticated route (`/exports/<id>`) until they
 * expire. A LoRA goes out in diffusers' or kohya's naming; a UNet (a LoRA merged into the base's) in
 * diffusers' layout; a pack as a tar of a diffusers folder that StableDiffusionPipeline.from_pretrained
 * loads once unpacked.
 */

/** How long an export can be downloaded. */
export const EXPORT_TTL_MINUTES = 15;

/** The HTTP route an export downloads from (see api/weight-downloads.ts). */
export const exportPath = (id: string): string => `/exports/${id}`;

const ExportInput = z
  .object({ modelId: z.string().nullish(), versionId: z.string().nullish(), format: z.enum(WeightFormat) })
  .refine((input) => (input.modelId == null) !== (input.versionId == null), { path: ['modelId'], message: 'give either modelId (its head) or versionId' });
export type ExportInput = z.input<typeof ExportInput>;

/**
 * Builds the export the owner asks for (of a public metamodel, which no user owns: an admin); anyone else gets
 * NOT_FOUND (a model they do not see) or FORBIDDEN.
 */
export async function exportWeights(db: DataSource, store: ObjectStore, user: User, input: ExportInput): Promise<WeightExport> {
  const request = parseInput(ExportInput, input, 'input');
  const version = request.versionId != null ? await db.getRepository(ModelVersion).findOneBy({ id: parseId(request.versionId, 'versionId') }) : null;
  if (request.versionId != null && !version) throw notFound('Model version');
  const model = await getModel(db, user, version?.modelId ?? parseId(request.modelId!, 'modelId'));
  if (model.kind === ModelKind.META ? !isAdmin(user) : model.ownerId !== user.id) throw forbidden('Only the model’s owner may export its weights');
  const exported = version ?? (model.headVersionId ? await db.getRepository(ModelVersion).findOneByOrFail({ id: model.headVersionId }) : null);
  const weights = await versionWeights(db, model.id, exported?.id ?? null);

  const file = await buildFile(store, weights, request.format, `${slug(model.name)}-v${exported?.number ?? 0}`);
  await deleteExpiredExports(db, store);
  const id = randomUUID();
  const objectKey = `exports/${id}/${file.name}`;
  await store.put(objectKey, file.bytes, file.contentType);
  const exports = db.getRepository(WeightExport);
  try {
    return await exports.save(exports.create({
      id, ownerId: user.id, modelId: model.id, versionId: exported?.id ?? null, format: request.format, objectKey, fileName: file.name,
      bytes: file.bytes.length, expiresAt: new Date(Date.now() + EXPORT_TTL_MINUTES * 60_000),
    }));
  } catch (error) {
    await store.delete(objectKey).catch(() => {}); // no row will ever name it
    throw error;
  }
}

/** An export of the user's that has not expired; NOT_FOUND for anyone else's, as if it did not exist. */
export async function getExport(db: DataSource, user: User, id: string): Promise<WeightExport> {
  const found = await db.getRepository(WeightExport).findOneBy({ id: parseId(id) });
  if (!found || found.ownerId !== user.id || found.expiresAt.getTime() <= Date.now()) throw notFound('Export');
  return found;
}

/**
 * Deletes expired exports, objects first: a failure leaves a row that getExport refuses, never an unreferenced
 * object. Each new export and every worker's periodic sweep run it.
 */
export async function deleteExpiredExports(db: DataSource, store: ObjectStore): Promise<void> {
  const expired = await db.getRepository(WeightExport).findBy({ expiresAt: LessThan(new Date()) });
  for (const { id, objectKey } of expired) {
    await store.delete(objectKey);
    await db.getRepository(WeightExport).delete(id);
  }
}

interface ExportFile {
  name: string;
  contentType: string;
  bytes: Uint8Array;
}

async function buildFile(store: ObjectStore, weights: VersionWeights, format: WeightFormat, stem: string): Promise<ExportFile> {
  const safetensors = (name: string, bytes: Uint8Array): ExportFile => ({ name: `${stem}-${name}.safetensors`, contentType: 'application/octet-stream', bytes });
  switch (format) {
    case WeightFormat.DIFFUSERS_LORA:
      return safetensors('lora', diffusersLora(await storedLora(store, weights)));
    case WeightFormat.KOHYA_LORA:
      return safetensors('kohya-lora', kohyaLora(await storedLora(store, weights)));
    case WeightFormat.DIFFUSERS_UNET: {
      const models = await loadBaseModelPack(store, weights.basePack);
      return safetensors('unet', serializeUNet(models, await versionUNet(store, weights, models)));
    }
    case WeightFormat.DIFFUSERS_PACK:
      return { name: `${stem}.tar`, contentType: 'application/x-tar', bytes: await diffusersPack(store, weights, stem) };
  }
}

async function storedLora(store: ObjectStore, weights: VersionWeights): Promise<Map<string, LoraLayer>> {
  if (!weights.lora) {
    throw badInput(`format: ${weights.unet ? 'this model is fully fine-tuned' : 'this version has no fine-tuned weights'}; export DIFFUSERS_UNET or DIFFUSERS_PACK`);
  }
  return parseLoraFile(await store.get(weights.lora));
}

/** B with the layer's alpha / rank folded in, so the file applies at scale 1 whatever reads it. */
function scaledUp(layer: LoraLayer): Float32Array {
  const factor = layer.alpha === undefined ? 1 : layer.alpha / layer.rank;
  return factor === 1 ? layer.up : layer.up.map((x) => x * factor);
}

/** diffusers' `save_lora_weights` naming: `unet.<module>.lora.down.weight` [rank, in] and `.lora.up.weight` [out, rank]. */
function diffusersLora(layers: Map<string, LoraLayer>): Uint8Array {
  const rank = ranksOf(layers);
  return serializeLora(new Map([...layers].flatMap(([module, layer]) => [
    [`unet.${module}.lora.down.weight`, layer.down],
    [`unet.${module}.lora.up.weight`, scaledUp(layer)],
  ])), rank);
}

/**
 * kohya's sd-scripts naming (what A1111 and ComfyUI load): `lora_unet_<module, dots as underscores>.lora_down.weight`,
 * `.lora_up.weight` and `.alpha`, alpha = rank so the LoRA applies at scale 1.
 */
function kohyaLora(layers: Map<string, LoraLayer>): Uint8Array {
  const tensors = new Map<string, StoredTensor>();
  for (const [module, layer] of [...layers].sort(([a], [b]) => a.localeCompare(b))) {
    const name = `lora_unet_${module.replaceAll('.', '_')}`;
    tensors.set(`${name}.alpha`, fromFloat32(Float32Array.of(layer.rank), []));
    tensors.set(`${name}.lora_down.weight`, fromFloat32(layer.down, [layer.rank, layer.inFeatures]));
    tensors.set(`${name}.lora_up.weight`, fromFloat32(scaledUp(layer), [layer.outFeatures, layer.rank]));
  }
  return serializeSafetensors(tensors, { ss_network_module: 'networks.lora' });
}

function ranksOf(layers: Map<string, LoraLayer>): number {
  const ranks = new Set([...layers.values()].map((layer) => layer.rank));
  if (ranks.size !== 1) throw new Error(`a stored LoRA has layers of ranks ${[...ranks].join(', ')}`);
  return [...ranks][0];
}

/** The version's whole UNet: its own, or the base's with its LoRA merged in (W + B A, as diffusers' fuse_lora), or the base's. */
async function versionUNet(store: ObjectStore, weights: VersionWeights, models: StableDiffusionModels): Promise<Map<string, Float32Array>> {
  if (weights.unet) return parseUNetWeights(models, await store.get(weights.unet));
  if (!weights.lora) return models.unet.weights;
  const merged = new Map(models.unet.weights);
  for (const [module, layer] of await storedLora(store, weights)) {
    const key = `${module}.weight`;
    const base = merged.get(key);
    if (!base || base.length !== layer.outFeatures * layer.inFeatures) throw new Error(`the LoRA adapts ${module}, which the base UNet lacks or sizes otherwise`);
    const w = Float32Array.from(base);
    const up = scaledUp(layer);
    for (let o = 0; o < layer.outFeatures; o++) {
      for (let r = 0; r < layer.rank; r++) {
        const b = up[o * layer.rank + r];
        if (b === 0) continue;
        const row = o * layer.inFeatures;
        const down = r * layer.inFeatures;
        for (let i = 0; i < layer.inFeatures; i++) w[row + i] += b * layer.down[down + i];
      }
    }
    merged.set(key, w);
  }
  return merged;
}

/** UNet weight files of a diffusers pack (single or sharded, safetensors or pickle): the export writes its own. */
const UNET_WEIGHTS = /^unet\/diffusion_pytorch_model[^/]*$/;

/** The base model's pack folder, every file as stored but the UNet's weights, which are the version's, in a tar under `<stem>/`. */
async function diffusersPack(store: ObjectStore, weights: VersionWeights, stem: string): Promise<Uint8Array> {
  const models = await loadBaseModelPack(store, weights.basePack);
  const unet = serializeUNet(models, await versionUNet(store, weights, models));
  const prefix = `${weights.basePack.replace(/\/+$/, '')}/`;
  const tar = tarPack();
  const bytes = buffer(tar);
  for (const key of (await store.list(prefix)).sort()) {
    const path = key.slice(prefix.length);
    if (!UNET_WEIGHTS.test(path)) tar.entry({ name: `${stem}/${path}` }, Buffer.from(await store.get(key)));
  }
  tar.entry({ name: `${stem}/unet/diffusion_pytorch_model.safetensors` }, Buffer.from(unet.buffer, unet.byteOffset, unet.byteLength));
  tar.finalize();
  return bytes;
}

/** A file-name-safe form of a model's name. */
function slug(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) || 'model';
}
