import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ENGINE = resolve(import.meta.dirname, '../../src/engine');
const PLATFORM = ['services', 'resolvers', 'storage', 'jobs', 'entities'].map((folder) => resolve(ENGINE, '..', folder));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : /\.(ts|js)$/.test(entry.name) ? [join(dir, entry.name)] : []);
}

describe('the engine boundary', () => {
  it('imports nothing from the platform', () => {
    const crossings: string[] = [];
    for (const file of sourceFiles(ENGINE)) {
      for (const [, specifier] of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)) {
        if (!specifier.startsWith('.')) continue;
        const target = resolve(file, '..', specifier);
        if (PLATFORM.some((folder) => target === folder || target.startsWith(`${folder}/`))) {
          crossings.push(`${relative(ENGINE, file)} imports ${specifier}`);
        }
      }
    }
    expect(sourceFiles(ENGINE).length).toBeGreaterThan(50);
    expect(crossings).toEqual([]);
  });
});
