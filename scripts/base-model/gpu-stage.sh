#!/usr/bin/env bash
# Builds .gpu-base/ (ignored, never committed) for a lent GPU machine, which has Node 22 and the GPU kit's
# onnxruntime but no project: train.ts bundled with the engine's worker script, and the emoji dataset.
# On the machine (see README "Base model"): source /root/gpukit/env.sh && node .gpu-base/train-base.js --device cuda ...
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-base
exclude=$(git rev-parse --git-path info/exclude) # .git is a file in a worktree
grep -qx '/.gpu-base/' "$exclude" || echo '/.gpu-base/' >> "$exclude"
[ -f .base-model/emoji.gz ] || npx tsx scripts/base-model/build-dataset.ts
node_modules/.bin/esbuild scripts/base-model/train.ts --bundle --platform=node --format=esm --target=node20 \
  --alias:sharp=./bench/gpu/sharp-absent.ts --outfile=.gpu-base/train-base.js --log-level=warning \
  --banner:js="import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);"
cp src/engine/runtime/session-worker.js .gpu-base/
# The identifier rules read two word lists at run time: the bundle looks for them beside itself.
cp node_modules/word-list/words.txt .gpu-base/
mkdir -p .gpu-base/node_modules && cp -r node_modules/naughty-words .gpu-base/node_modules/
cp .base-model/emoji.gz .gpu-base/
du -sh .gpu-base
