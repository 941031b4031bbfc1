#!/usr/bin/env bash
# Prepares .devtools/ (ignored by git) for a GPU machine that has no Node, as this workplace's
# device tool lends: a Node binary, the one external module of the bundles (ts-morph), check.ts
# and profile.ts bundled by esbuild, and every CUDA library and kernel checker prebuilt for ARCH,
# so that device time goes to measuring, not to nvcc. With --baseline REV, also a worktree of REV
# in .devtools/base with the current bench/gpu scripts, its own bundle and prebuilt libraries: the
# same measurements of the previous kernels, in the same call (bench/RESULTS.md, run 4).
#
#   bash bench/gpu/device/prepare.sh [--arch sm_90a] [--baseline REV]
#
# Then carry .devtools and runtime/addon/build, and run there (bench/gpu/device/run.sh):
#   bash bench/gpu/device/run.sh [check.ts options...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
ARCH=sm_90a
BASELINE=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH="$2"; shift 2 ;;
    --baseline) BASELINE="$2"; shift 2 ;;
    *) echo "prepare.sh: unknown option $1 (use --arch ARCH, --baseline REV)" >&2; exit 2 ;;
  esac
done
[ -f runtime/addon/build/Release/mc_runtime.node ] || { echo "prepare.sh: runtime/addon/build/Release/mc_runtime.node is missing: run npm ci first" >&2; exit 1; }
mkdir -p .devtools
# What run.sh unpacks (when it was tried here) must not travel a second time, uncompressed.
rm -rf .devtools/node_modules .devtools/prebuilt
# Written under a temporary name and renamed, so that an interrupted run leaves no half archive.
# (Delete them after upgrading Node or ts-morph.)
if [ ! -f .devtools/node.xz ]; then
  echo "packing $(command -v node)"
  xz -6 -c "$(command -v node)" > .devtools/node.xz.tmp && mv .devtools/node.xz.tmp .devtools/node.xz
fi
# ts-morph and what it requires: the bundles leave it external (it carries its own TypeScript).
if [ ! -f .devtools/node_modules.tar.xz ]; then
  tar -cJf .devtools/node_modules.tar.xz.tmp node_modules/ts-morph node_modules/@ts-morph \
    node_modules/code-block-writer node_modules/path-browserify node_modules/tinyglobby node_modules/fdir node_modules/picomatch \
    node_modules/minimatch node_modules/brace-expansion node_modules/balanced-match
  mv .devtools/node_modules.tar.xz.tmp .devtools/node_modules.tar.xz
fi

# Bundles check.mjs (and profile.mjs) of the tree at $1 into $1/$2, prebuilt libraries into $1/$2/prebuilt.tar.xz.
bundle_and_prebuild() {
  local tree="$1" out="$2"
  local banner="--banner:js=import { createRequire as __mcCreateRequire } from 'module'; const require = __mcCreateRequire(import.meta.url);"
  mkdir -p "$tree/$out"
  for script in check profile; do
    [ -f "$tree/bench/gpu/$script.ts" ] || continue
    (cd "$tree" && npx esbuild "bench/gpu/$script.ts" --bundle --platform=node --format=esm --target=node20 --external:ts-morph \
      --outfile="$out/$script.mjs" "$banner" --log-level=warning)
  done
  rm -rf "$tree/$out/prebuilt"
  (cd "$tree" && npx tsx bench/gpu/prebuild.ts "$out/prebuilt" --arch "$ARCH")
  tar --exclude=prebuilt/cache -cJf "$tree/$out/prebuilt.tar.xz" -C "$tree/$out" prebuilt
  rm -rf "$tree/$out/prebuilt"  # only the archive travels (the call carries at most 64 MiB)
}

bundle_and_prebuild . .devtools
# Which code the bundle and the libraries are (run.sh prints it first, so that each call's log says what it measured).
{ echo "code $(git rev-parse --short HEAD)$(git status --porcelain --untracked-files=no | grep -q . && echo ' with uncommitted changes'), prepared $(date -u +%FT%TZ)"; } > .devtools/rev.txt
if [ -n "$BASELINE" ]; then
  git worktree remove --force .devtools/base 2>/dev/null || rm -rf .devtools/base
  git worktree prune
  git worktree add --detach .devtools/base "$BASELINE" >/dev/null
  # The same measurements, of the older kernels: today's bench/gpu scripts and the bench/ helpers they import.
  cp bench/gpu/*.ts bench/gpu/*.py .devtools/base/bench/gpu/
  cp bench/*.ts .devtools/base/bench/
  mkdir -p .devtools/base/runtime/addon/build/Release
  cp runtime/addon/build/Release/mc_runtime.node .devtools/base/runtime/addon/build/Release/
  # Today's scripts read a checkpoint through runtime/checkpoint-files.ts (sharded checkpoints, after
  # 48e8004); an older tree's checkpoint.ts takes the one file's header itself, so hand it through.
  if [ ! -f .devtools/base/runtime/checkpoint-files.ts ]; then
    echo 'export const singleFileCheckpoint = <T>(header: T): T => header;  // prepare.sh: a baseline from before sharded checkpoints' \
      > .devtools/base/runtime/checkpoint-files.ts
  fi
  bundle_and_prebuild .devtools/base .devtools
  echo "baseline $(git rev-parse --short "$BASELINE")" >> .devtools/rev.txt
else
  git worktree remove --force .devtools/base 2>/dev/null || rm -rf .devtools/base  # an old baseline must not travel
  git worktree prune
fi
du -sh .devtools runtime/addon/build
