// @bigdiffusion/client: a typed client of the bigdiffusion GraphQL API (schema/schema.graphql).
export { BigDiffusionClient } from './client';
export type { BaseModel, ClientOptions, FollowOptions, Image, InstanceImage, Job, JobUpdate, JobWithImages, StartedFineTune } from './client';
export { API_ERROR_CODES, ApiError, isApiError, JobFailedError, type ApiErrorCode, type GraphQLErrorBody } from './errors';
// The typed document nodes and the schema's input and enum types, for request() and your own code.
export * from './generated/graphql';
