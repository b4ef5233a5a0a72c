#!/usr/bin/env bash
# Builds .gpu-stage/ (ignored, never committed): the bundled bench, the engine's worker script, the fixtures
# and diffusers' benchmark. A diffusers source tarball (diffusers-src.tar.gz) is added by hand: see bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-stage
exclude=$(git rev-parse --git-path info/exclude) # .git is a file in a worktree
grep -qx '/.gpu-stage/' "$exclude" || echo '/.gpu-stage/' >> "$exclude"
node_modules/.bin/esbuild bench/gpu.ts --bundle --platform=node --format=esm --target=node20 \
  --alias:sharp=./bench/gpu/sharp-absent.ts --outfile=.gpu-stage/gpu.js --log-level=warning \
  --banner:js="import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);"
cp src/engine/runtime/session-worker.js .gpu-stage/
rm -rf .gpu-stage/tiny-sd15 && cp -r ../shared/fixtures/tiny-sd15 .gpu-stage/
cp ../shared/gpu/diffusers_bench.py .gpu-stage/
du -sh .gpu-stage
