import fs from 'node:fs/promises';
import { generate } from '@graphql-codegen/cli';
import { describe, expect, it } from 'vitest';
import config from '../../client/codegen';

describe('the client’s generated code', () => {
  it('matches schema/schema.graphql and the client’s operations (else: npm run client:codegen)', async () => {
    const outputs = await generate(config, false);
    expect(outputs.length).toBeGreaterThan(0);
    for (const { filename, content } of outputs) expect(await fs.readFile(filename, 'utf8'), filename).toBe(content);
  });
});
