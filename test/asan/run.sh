#!/usr/bin/env bash
# Runs the runtime addon's tests and the end-to-end bad-input tests with the addon built under
# AddressSanitizer (runtime/addon/build-asan; the normal build is untouched). Node itself is not
# instrumented, so libasan is preloaded; LeakSanitizer is off because V8 keeps memory for good at
# exit, which it would report as leaks. Any ASan report aborts the process and fails the run.
# Extra arguments go to vitest (e.g. --reporter=json --outputFile.json=FILE).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

libasan=$(g++ -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
  echo "test/asan/run.sh: libasan not found (g++ -print-file-name=libasan.so); install g++'s libasan (e.g. apt-get install libasan8)" >&2
  exit 1
fi

# A build directory configured elsewhere (another checkout) cannot be reused by cmake: start over.
cache=runtime/addon/build-asan/CMakeCache.txt
if [ -f "$cache" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$root/runtime/addon" "$cache"; then
  rm -rf runtime/addon/build-asan
fi
# Every core: the instrumented build is this script's longest step after the tests.
npx cmake-js compile -d runtime/addon -O runtime/addon/build-asan --CDMC_SANITIZE=address -p "$(nproc 2>/dev/null || echo 2)" >/dev/null
if ! grep -q '__asan_init' runtime/addon/build-asan/Release/mc_runtime.node; then
  echo "test/asan/run.sh: runtime/addon/build-asan/Release/mc_runtime.node is not instrumented; rm -rf runtime/addon/build-asan and run again" >&2
  exit 1
fi

# The tests load runtime/addon/build/Release/mc_runtime.node (runtime/native-loader.ts). Rather
# than teach the loader another path, run them in a copy of the working tree whose build/ holds
# the sanitized addon; node_modules is shared by a symlink.
stage=$(mktemp -d "${TMPDIR:-/tmp}/mc-asan-XXXXXX")
trap 'rm -rf "$stage"' EXIT
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    case "$f" in runtime/addon/build*) continue ;; esac
    if [ -e "$f" ]; then printf '%s\0' "$f"; fi
  done | tar --null -T - -cf - | tar -C "$stage" -xf -
else
  tar --exclude=./node_modules --exclude=./.git --exclude='./runtime/addon/build*' --exclude=./dist -cf - . | tar -C "$stage" -xf -
fi
ln -s "$root/node_modules" "$stage/node_modules"
mkdir -p "$stage/runtime/addon/build/Release"
cp runtime/addon/build-asan/Release/mc_runtime.node "$stage/runtime/addon/build/Release/mc_runtime.node"

cd "$stage"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:${ASAN_OPTIONS:-}"
LD_PRELOAD="$libasan${LD_PRELOAD:+:$LD_PRELOAD}" npx vitest run --config test/asan/vitest.config.ts "$@"
