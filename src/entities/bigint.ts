import type { ValueTransformer } from 'typeorm';

/** A bigint column read as a number: PostgreSQL hands bigints over as strings, and byte counts and seeds fit 2^53 exactly. */
export const BIGINT_AS_NUMBER: ValueTransformer = { to: (v: number) => v, from: (v: string | null) => (v === null ? null : Number(v)) };
