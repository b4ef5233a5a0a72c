import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The walls of the architecture, from the bottom up: the engine and the entities stand alone; storage
 * reaches databases and object stores; services hold the business rules over both; the API and the
 * worker are two front doors over the services that never reach into each other; main.ts composes.
 * Everything outside the engine reaches it through `src/engine/index.ts` alone.
 */
const SRC = resolve(import.meta.dirname, '../src');
const ROOT = resolve(SRC, '..');

/** What each part of the tree may import besides itself (main.ts, the composition root, may import anything). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  config: ['engine'],
  engine: [],
  entities: [],
  storage: ['config', 'entities', 'engine', 'migrations'],
  services: ['config', 'entities', 'engine', 'storage'],
  api: ['config', 'entities', 'engine', 'services', 'web'],
  worker: ['config', 'entities', 'engine', 'services'],
};

/** The part of the tree a file lies in: a folder of src/ (config for src/config.ts), or a top-level folder. */
function partOf(file: string): string {
  const inSrc = relative(SRC, file);
  if (!inSrc.startsWith('..')) return inSrc.split('/')[0].replace(/\.ts$/, '');
  return relative(ROOT, file).split('/')[0];
}

/** Why `file` may not import `target` (both absolute, the target without extension), or undefined. */
function crossing(file: string, target: string): string | undefined {
  const from = partOf(file);
  const to = partOf(target);
  if (from === 'main' || from === to) return undefined;
  if (!MAY_IMPORT[from]?.includes(to)) return `${from} may not import ${to}`;
  if (to === 'engine' && target !== join(SRC, 'engine') && target !== join(SRC, 'engine/index')) return 'the engine is reached through src/engine/index.ts only';
  return undefined;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : /\.(ts|js)$/.test(entry.name) ? [join(dir, entry.name)] : []);
}

/** Every relative import in src/, as [importing file, resolved target without extension]. */
function imports(): [string, string][] {
  return sourceFiles(SRC).flatMap((file) =>
    [...readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*['"](\.[^'"]*)['"]/g)].map(([, specifier]): [string, string] => [
      file,
      resolve(file, '..', specifier).replace(/\.(ts|js|mjs)$/, ''),
    ]));
}

describe('the walls between the layers', () => {
  it('has every import of src/ point down or sideways within its part, and the engine reached through its index', () => {
    const all = imports();
    const crossings = all.flatMap(([file, target]) => {
      const why = crossing(file, target);
      return why ? [`${relative(SRC, file)} imports ${relative(ROOT, target)}: ${why}`] : [];
    });
    expect(crossings).toEqual([]);
    // The test sees the tree it guards: every part is there and imports something.
    const parts = new Set(all.map(([file]) => partOf(file)));
    expect([...parts].sort()).toEqual(['api', 'config', 'engine', 'entities', 'main', 'services', 'storage', 'worker']);
    expect(all.length).toBeGreaterThan(300);
  });

  it('refuses what the layout forbids', () => {
    const at = (path: string) => join(SRC, path);
    expect(crossing(at('engine/pipelines/txt2img.ts'), at('services/jobs'))).toBe('engine may not import services');
    expect(crossing(at('services/jobs.ts'), at('worker/job-runner'))).toBe('services may not import worker');
    expect(crossing(at('worker/worker.ts'), at('api/context'))).toBe('worker may not import api');
    expect(crossing(at('api/server.ts'), at('worker/worker'))).toBe('api may not import worker');
    expect(crossing(at('storage/job-queue.ts'), at('services/container'))).toBe('storage may not import services');
    expect(crossing(at('entities/job.ts'), at('services/jobs'))).toBe('entities may not import services');
    expect(crossing(at('services/versions.ts'), at('engine/weights/pack'))).toBe('the engine is reached through src/engine/index.ts only');
    expect(crossing(at('services/versions.ts'), at('engine'))).toBeUndefined();
    expect(crossing(at('main.ts'), at('worker/worker'))).toBeUndefined();
  });
});
