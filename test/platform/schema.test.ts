import 'reflect-metadata';
import fs from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { buildAppSchema, printAppSchema } from '../../src/api/schema';

describe('schema/schema.graphql', () => {
  it('is what the resolvers produce (run `npm run schema:emit` after changing the API)', async () => {
    const committed = await fs.readFile(new URL('../../schema/schema.graphql', import.meta.url), 'utf8');
    expect(printAppSchema(await buildAppSchema())).toBe(committed);
  });
});
