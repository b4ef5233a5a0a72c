// Writes schema/schema.graphql from the resolvers. test/platform/schema.test.ts fails when it is stale.
import 'reflect-metadata';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { buildAppSchema, printAppSchema } from '../src/api/schema';

const target = fileURLToPath(new URL('../schema/schema.graphql', import.meta.url));
await fs.writeFile(target, printAppSchema(await buildAppSchema()));
console.log('wrote schema/schema.graphql');
