import { ApiKey } from './api-key';
import { BaseModel } from './base-model';
import { Concept } from './concept';
import { Contribution } from './contribution';
import { Image } from './image';
import { InstanceImage } from './instance-image';
import { Job } from './job';
import { Model } from './model';
import { ModelVersion } from './model-version';
import { User } from './user';
import { IdempotencyKey } from './idempotency-key';
import { JobLoss } from './job-loss';
import { JobWebhook, WebhookDelivery, WebhookSettings } from './webhook';
import { WeightExport } from './weight-export';
import { WorkerProcess } from './worker-process';

export { ApiKey, BaseModel, Concept, Contribution, IdempotencyKey, Image, InstanceImage, Job, JobLoss, JobWebhook, Model, ModelVersion, User, WebhookDelivery, WebhookSettings, WeightExport, WorkerProcess };
export { WeightFormat } from './weight-export';
export { WebhookDeliveryStatus, WebhookEvent, WebhookTarget } from './webhook';
export { Role } from './user';
export { ModelKind } from './model';
export { ConceptKind } from './concept';
export { ContributionStatus } from './contribution';
export { FineTuneMethod } from './model-version';
export { JobStatus, JobType } from './job';

/** Every table, for the DataSource. */
export const entities = [User, ApiKey, BaseModel, Model, ModelVersion, Concept, Contribution, InstanceImage, Job, Image,
  WebhookSettings, JobWebhook, WebhookDelivery, IdempotencyKey, JobLoss, WeightExport, WorkerProcess];
