import { defineConfig } from 'vitest/config';

export default defineConfig({
  // graphql 16 has no exports map: Node (and so type-graphql, Apollo) loads its CommonJS main, while
  // Vite would give our sources its ESM "module" file, and two graphql copies break its instanceof checks.
  resolve: { alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }] },
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 180_000,
  },
});
