import type { DataSource, EntityManager } from 'typeorm';
import { In } from 'typeorm';
import { Contribution, ContributionStatus, InstanceImage, ModelKind, ModelVersion, type User } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { getConcept } from './concepts';
import { badInput, conflict, forbidden, notFound } from './errors';
import { ModelEventType, publishModelEvent } from './model-events';
import { canChangeModel, canSeeModel, getModel } from './models';
import { pageOf, whereCreated, type CreatedFilter, type Page, type PageRequest } from './pagination';
import { parseId } from './validate';
import { appendVersion, tryLockVersions } from './versions';
import { isAdmin } from './viewer';

export interface ContributionFilter extends CreatedFilter {
  /** Absent: the user's own contributions, to any model. */
  modelId?: string | null;
  status?: ContributionStatus | null;
}

/**
 * A page of contributions, newest first. They are visible with their model: everyone signed in sees
 * those to the public metamodel, only the owner those to a private metamodel. Without a model, lists
 * the user's own.
 */
export async function listContributions(db: DataSource, user: User, filter: ContributionFilter, page: PageRequest): Promise<Page<Contribution>> {
  const query = whereCreated(db.getRepository(Contribution).createQueryBuilder('contribution'), filter);
  if (filter.modelId == null) query.andWhere('contribution.userId = :user', { user: user.id });
  else query.andWhere('contribution.modelId = :modelId', { modelId: (await getModel(db, user, filter.modelId)).id });
  if (filter.status) query.andWhere('contribution.status = :status', { status: filter.status });
  return pageOf(query, page);
}

export async function getContribution(db: DataSource, user: User, id: string): Promise<Contribution> {
  const contribution = await db
    .getRepository(Contribution)
    .findOne({ where: { id: parseId(id) }, relations: { model: true } });
  if (!contribution?.model || !canSeeModel(user, contribution.model)) throw notFound('Contribution');
  return contribution;
}

/**
 * Undoes a merged contribution. History is immutable, so this appends a version whose weights are
 * those from before the contribution and makes it the head. Contributions merged after it were
 * trained on top of it and go with it: all are marked REVERTED, and their concepts are no longer
 * offered. Admins revert on the public metamodel, owners on their own models.
 */
export async function revertContribution(db: DataSource, user: User, id: string): Promise<Contribution> {
  const contribution = await getContribution(db, user, id);
  if (!canChangeModel(user, contribution.model!)) throw forbidden('Only administrators revert contributions to a public metamodel');
  await db.transaction(async (tx) => {
    if (!(await tryLockVersions(tx, contribution.modelId))) {
      throw conflict('A contribution to this model is training; revert once it has finished');
    }
    const current = await tx.getRepository(Contribution).findOneByOrFail({ id: contribution.id });
    if (current.status !== ContributionStatus.MERGED || !current.resultingVersionId) {
      throw conflict(`Only a merged contribution can be reverted; this one is ${current.status}`);
    }
    const versions = tx.getRepository(ModelVersion);
    const made = await versions.findOneByOrFail({ id: current.resultingVersionId });
    const before = made.parentVersionId ? await versions.findOneByOrFail({ id: made.parentVersionId }) : null;
    const [{ headVersionId }] = await tx.query('SELECT "headVersionId" FROM model WHERE id = $1', [current.modelId]);
    const version = await appendVersion(tx, current.modelId, headVersionId, {
      weightsKey: before?.weightsKey ?? null,
      method: made.method,
      contributionId: null,
    });
    await publishModelEvent(tx, { modelId: current.modelId, type: ModelEventType.REVERTED, contributionId: current.id, versionId: version.id, jobId: null });
    const undone: { id: string }[] = await tx.query(
      `SELECT c.id FROM contribution c JOIN model_version v ON v.id = c."resultingVersionId"
       WHERE c."modelId" = $1 AND c.status = $2 AND v.number >= $3`,
      [current.modelId, ContributionStatus.MERGED, made.number],
    );
    await tx.getRepository(Contribution).update({ id: In(undone.map((c) => c.id)) }, { status: ContributionStatus.REVERTED });
  });
  return db.getRepository(Contribution).findOneByOrFail({ id: contribution.id });
}

/**
 * A fine-tune that will not merge (it failed or was canceled): its contribution is FAILED, so its
 * concept is no longer offered, and its photos go back to the owner's staged ones for another try.
 * Runs in the transaction `tx` that ends its job, which announces it to the model's feed.
 */
export async function withdrawContribution(tx: EntityManager, contributionId: string, jobId: string): Promise<void> {
  const contribution = await tx.getRepository(Contribution).findOneBy({ id: contributionId });
  if (!contribution || contribution.status === ContributionStatus.MERGED || contribution.status === ContributionStatus.REVERTED) return;
  await tx.getRepository(Contribution).update(contribution.id, { status: ContributionStatus.FAILED });
  await tx.getRepository(InstanceImage).update({ conceptId: contribution.conceptId }, { conceptId: null });
  await publishModelEvent(tx, { modelId: contribution.modelId, type: ModelEventType.CONTRIBUTION_FAILED, contributionId, versionId: null, jobId });
}

/**
 * Takes a concept its contributor taught to a metamodel back out, without touching anyone else's: a
 * new version is appended and made the head, the contribution is WITHDRAWN (the concept is no longer
 * offered, its identifier stays taken), and its photos are deleted, rows and objects, so no later
 * training replays them. When the head has the weights its contribution made, the new version has the
 * weights from before it: the model exactly as if it had never learned the concept. Otherwise later contributions
 * were trained on top of it and keep their weights; what the model learned of the concept then fades
 * as later trainings no longer replay it (undoing it at once would take an administrator's revert,
 * which also undoes the later contributions).
 */
export async function withdrawConcept(db: DataSource, store: ObjectStore, user: User, conceptId: string): Promise<Contribution> {
  const concept = await getConcept(db, user, conceptId);
  if (concept.contributorId !== user.id && !isAdmin(user)) throw forbidden('Only the concept’s contributor may withdraw it');
  if (concept.model!.kind === ModelKind.PRIVATE) throw badInput('id: a PRIVATE model has only this concept; delete the model instead');
  const objectKeys = await db.transaction(async (tx) => {
    if (!(await tryLockVersions(tx, concept.modelId))) throw conflict('A contribution to this model is training; withdraw once it has finished');
    const contribution = await tx.getRepository(Contribution).findOneByOrFail({ conceptId: concept.id });
    if (contribution.status !== ContributionStatus.MERGED || !contribution.resultingVersionId) {
      throw conflict(`Only a learned concept can be withdrawn; its contribution is ${contribution.status}`);
    }
    const versions = tx.getRepository(ModelVersion);
    const [{ headVersionId }] = await tx.query('SELECT "headVersionId" FROM model WHERE id = $1', [concept.modelId]);
    const head = await versions.findOneByOrFail({ id: headVersionId });
    const made = await versions.findOneByOrFail({ id: contribution.resultingVersionId });
    const latest = head.weightsKey === made.weightsKey;
    const before = latest && made.parentVersionId ? await versions.findOneByOrFail({ id: made.parentVersionId }) : null;
    const version = await appendVersion(tx, concept.modelId, head.id, {
      weightsKey: latest ? (before?.weightsKey ?? null) : head.weightsKey,
      method: head.method,
      contributionId: null,
    });
    await publishModelEvent(tx, { modelId: concept.modelId, type: ModelEventType.WITHDRAWN, contributionId: contribution.id, versionId: version.id, jobId: null });
    await tx.getRepository(Contribution).update(contribution.id, { status: ContributionStatus.WITHDRAWN });
    const photos = await tx.getRepository(InstanceImage).find({ where: { conceptId: concept.id }, select: { id: true, objectKey: true } });
    await tx.getRepository(InstanceImage).delete({ conceptId: concept.id });
    return photos.map((p) => p.objectKey);
  });
  // After the commit: a failure here leaves unreferenced objects, never rows pointing at nothing.
  for (const key of objectKeys) await store.delete(key).catch(() => {});
  return db.getRepository(Contribution).findOneByOrFail({ conceptId: concept.id });
}
