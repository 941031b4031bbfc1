#!/usr/bin/env bash
# On the GPU machine (after bench/gpu/device/prepare.sh here; the call carries .devtools and
# runtime/addon/build): unpacks Node, ts-morph and the prebuilt libraries, prints the card's state,
# then runs the bundled check with the given options, its log under $OUT. With a baseline prepared,
# `BASELINE=1` runs the same options in .devtools/base afterwards (into $OUT/base), but only the
# sections in BASELINE_ONLY (default decode,prefill: the kernel checks of old code tell nothing new).
#
#   bash bench/gpu/device/run.sh --only kernels,logits,decode,long,prefill
#   BASELINE=1 bash bench/gpu/device/run.sh --only prefill
#   PROFILE=1 bash bench/gpu/device/run.sh --only decode --cases mistral-7b-v0.1   (then profile.mjs)
#   PROFILE_PREFILL=16 bash bench/gpu/device/run.sh --only prefill   (then profile.mjs --prefill 16: one 16-token
#     prefill of Mistral-7B per kernel; PROFILE_CASE=mixtral-8x7b for another model)
#   SANITIZE=1 bash bench/gpu/device/run.sh --only kernels   (then compute-sanitizer memcheck, racecheck and
#     synccheck over the kernel checks of tiny-moe and mistral-7b-v0.1 in bf16, prefills of 37 and 130 tokens:
#     split-K and A narrowed once on the 7B's shapes)
#   WGMMA=1 bash bench/gpu/device/run.sh --only kernels,logits,prefill   (then the kernel and logits checks in
#     bf16 and f16 with every prefill GEMM on wgmma, and prefill timed with mma.sync alone, the peer of the
#     default engine: $OUT/wgmma-all, $OUT/mma; WGMMA_KERNELS=tiny-moe.bf16,mistral-7b-v0.1.bf16 checks only
#     those cases' kernels; run 23 of bench/RESULTS.md)
#   A16_AB=1 bash bench/gpu/device/run.sh --only prefill   (then prefill again with MC_CUDA_A16=0, A read
#     through the Op by every column block as before run 8, and with MC_CUDA_A16=64, A narrowed from 64 rows
#     only as before run 12: $OUT/a16.md and $OUT/a16.log)
#   PREFETCH_AB="8 8,24" bash bench/gpu/device/run.sh --only decode   (then decode again with each amount of
#     the next GEMV's weights prefetched into L2, MC_CUDA_PREFETCH_MB=N or N,M with M MiB across the
#     attention, and once more with none, so that drift between the runs shows: all in $OUT/prefetch.md
#     and $OUT/prefetch.log; run 9 of bench/RESULTS.md; PREFETCH_ONLY=decode,long adds the long context,
#     PREFETCH_CASES=mistral-7b-v0.1 limits the A/B to that model; it runs first of the extras)
#   bash bench/gpu/device/run.sh --only breakdown --cases mistral-7b-v0.1   (decode with kernels left out,
#     MC_CUDA_DIAG_SKIP, one model load per variant: a step's time per kernel in situ; bench/gpu/breakdown.ts)
#   CHAIN_AB=1 bash bench/gpu/device/run.sh --only decode   (then decode again with MC_CUDA_DECODE=chain, a dense
#     layer's wo, w1|w3, w2 and the next wq|wk|wv in one cooperative kernel, with MC_CUDA_DECODE=layer, its
#     decode attention and combine in that kernel too, and with the defaults once more: $OUT/chain.md and
#     $OUT/chain.log; runs 18 and 19 of bench/RESULTS.md; CHAIN_CASES=mistral-7b-v0.1 limits it)
#   X_AB=1 bash bench/gpu/device/run.sh --only decode   (then decode again with MC_CUDA_X=shared, wo and w2
#     copying their input into shared memory instead of reading it in the stream, with the defaults, and both
#     once more: $OUT/x.md and $OUT/x.log; runs 21-23 of bench/RESULTS.md; X_CASES=mistral-7b-v0.1 limits it,
#     X_ONLY=breakdown runs the in-situ breakdown in each arm instead of decode)
#   ATTN_AB=1 bash bench/gpu/device/run.sh --only long   (then the long contexts again with MC_CUDA_ATTN_BLOCKS=256,
#     the decode attention split for about 256 blocks as before run 26, with the defaults (512), and both once more:
#     $OUT/attn.md and $OUT/attn.log; run 26 of bench/RESULTS.md; ATTN_ONLY=decode,long adds the short contexts,
#     ATTN_CASES limits it)
#   CLUSTER_AB=1073741824 bash bench/gpu/device/run.sh --only decode   (then decode again with MC_CUDA_ATTN_CLUSTER=N,
#     the decode attention as one kernel of clusters at positions up to N (all of them here), with the defaults, and
#     both once more: $OUT/cluster.md and $OUT/cluster.log; run 27 of bench/RESULTS.md; CLUSTER_ONLY=decode,long adds
#     the long contexts, CLUSTER_CASES limits it)
#   CLUSTER_CHECK=1 bash bench/gpu/device/run.sh --only kernels   (then the bf16 logits of every tiny model with
#     MC_CUDA_ATTN_CLUSTER=37: decode at positions 32-41 replays both graphs, the one-kernel attention's and the
#     split kernels'; the kernel checks check the kernel itself under the setting, always: $OUT/cluster-check.*)
#   bash bench/gpu/device/run.sh --only boundaries   (~20 s: what a boundary between two decode GEMVs costs as
#     kernels in a graph and as a grid barrier in one persistent kernel, bench/gpu/boundaries.cu; RESULTS run 17)
#   DEEP_AB=1 bash bench/gpu/device/run.sh --only prefill   (then prefill again with MC_CUDA_GEMM_DEEP=0: the
#     4-stage small tile where run 16 takes the 8-stage one: $OUT/deep.md and $OUT/deep.log)
#   PDL_CHECK=1 bash bench/gpu/device/run.sh --only kernels   (then the kernel checks of tiny-dense, tiny-moe and
#     mistral-7b-v0.1 in bf16, and the bf16 logits, with MC_CUDA_PDL=all and MC_CUDA_PDL_TRIGGER=last-rows:
#     $OUT/pdl-check.log and $OUT/pdl-check.md; what run 14's settings need before one becomes a default)
#   KERNELS=tiny-dense.bf16,mistral-7b-v0.1.bf16 bash bench/gpu/device/run.sh --only decode   (then the kernel checks
#     of the named cases only, their prebuilt checkers run directly with a fresh seed and the default
#     prefills (37 and 700 tokens), where --only kernels runs every case of bench/gpu/cases.ts, Mistral Large 2's
#     float64 reference too; KERNELS_GEMM=wgmma-all checks them with every prefill GEMM on wgmma, KERNELS_GEMM=mma
#     with none: $OUT/kernels.log)
#   PDL_AB=1 bash bench/gpu/device/run.sh --only decode   (then decode again with MC_CUDA_PDL=all, with
#     MC_CUDA_PDL_TRIGGER=last-rows, with both, with MC_CUDA_PDL=off, and with the defaults once more so
#     that drift shows: $OUT/pdl.md and $OUT/pdl.log; run 14 of bench/RESULTS.md; PDL_CASES=config limits it)
# At most 8 files come back from $OUT; each check writes 3 (results.md, results.json, its log). So:
#   BUDGET_S=540 PACK=1 PREFETCH_AB=... bash bench/gpu/device/run.sh ...   every step gets only what is left of
#     BUDGET_S seconds (a step past it is killed, later ones are skipped), and at the end everything under $OUT
#     is packed into $OUT/all.tgz, beside $OUT/summary.md (every results table): a call that runs out of time
#     still returns what it measured. Keep BUDGET_S below the device call's timeout.
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT="${OUT:-/tmp/mc-device-out}"
check_args=("$@")  # the check options, for the A/B arms (decode_ab)
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"  # absolute: the baseline runs from .devtools/base
xz -dc .devtools/node.xz > /tmp/node && chmod +x /tmp/node || { echo "run.sh: cannot unpack .devtools/node.xz (run prepare.sh first)" >&2; exit 1; }
tar -xJf .devtools/node_modules.tar.xz -C .devtools || { echo "run.sh: cannot unpack .devtools/node_modules.tar.xz" >&2; exit 1; }
tar -xJf .devtools/prebuilt.tar.xz -C .devtools || { echo "run.sh: cannot unpack .devtools/prebuilt.tar.xz" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.current.sm,clocks.current.memory,temperature.gpu --format=csv
cat .devtools/rev.txt 2>/dev/null || echo "run.sh: .devtools/rev.txt is missing (prepared before it was written): the code measured is not recorded" >&2
started=$SECONDS
# Counted from the script's start ($SECONDS), less 20 s for the packing and a killed step's grace.
deadline=$(( ${BUDGET_S:-86400} - 20 ))
# timed CMD...: CMD with the time left of BUDGET_S (exit 124 when it is killed); skipped when none is left.
timed() {
  local left=$(( deadline - SECONDS ))
  if [ "$left" -lt 15 ]; then echo "=== run.sh: BUDGET_S spent, skipped: ${*:1:4} ..." >&2; return 124; fi
  timeout -k 5 "$left" "$@"
}
pack() {
  [ "${PACK:-0}" = 1 ] || return 0
  local sum=/tmp/mc-summary.md
  : > "$sum"
  find "$OUT" -name '*.md' | sort | while read -r f; do { echo "# ${f#$OUT/}"; cat "$f"; echo; } >> "$sum"; done
  tar -czf /tmp/mc-all.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/mc-all.tgz "$OUT/all.tgz" && mv "$sum" "$OUT/summary.md"
}
trap pack EXIT
# variant GROUP LABEL CHECK_OPTIONS...: one more check process (an A/B arm), its log and results table
# appended to $OUT/GROUP.log and $OUT/GROUP.md: one file each for all arms, since only 8 come back.
variant() {
  local group=$1 label=$2 dir
  dir=$(mktemp -d)
  shift 2
  echo "=== [$((SECONDS - started)) s] $group: $label" | tee -a "$OUT/$group.log"
  timed /tmp/node .devtools/check.mjs --prebuilt .devtools/prebuilt/manifest.json --out "$dir" "$@" 2>&1 | tee -a "$OUT/$group.log"
  local s=${PIPESTATUS[0]}
  [ "$s" = 0 ] || status=$s
  { echo "## $label, after $((SECONDS - started)) s"; cat "$dir/results.md"; echo; } >> "$OUT/$group.md"
}
# kernel_check CASE (config.dtype): the path of its prebuilt kernel checker, or a line on stderr and status 1.
kernel_check() {
  local binary
  binary=$(/tmp/node -e 'const m = require(process.argv[1]); console.log(m.kernelChecks[process.argv[2]] ?? "")' "$PWD/.devtools/prebuilt/manifest.json" "$1")
  [ -n "$binary" ] || { echo "run.sh: no prebuilt kernel check for $1" >&2; return 1; }
  echo ".devtools/prebuilt/$binary"
}
# kernel_checks LOG GEMM CASES: each case's prebuilt checker (config.dtype, comma-separated), as --only
# kernels runs it (every core for the float64 reference), with MC_CUDA_GEMM=GEMM (empty: each GPU's
# default engine), all appended to LOG; returns the status of the last one that failed (0: none).
kernel_checks() {
  local log=$1 gemm=$2 case binary s rc=0
  for case in ${3//,/ }; do
    binary=$(kernel_check "$case") || { rc=1; continue; }
    echo "=== [$((SECONDS - started)) s] kernel checks of $case, MC_CUDA_GEMM=${gemm:-(unset)}" | tee -a "$log"
    ( if [ -n "$gemm" ]; then export MC_CUDA_GEMM="$gemm"; else unset MC_CUDA_GEMM; fi
      OMP_NUM_THREADS=$(nproc) timed "$binary" 2>&1 | tee -a "$log" | grep -v '^ok '
      exit "${PIPESTATUS[0]}" )
    s=$?
    [ "$s" = 0 ] || rc=$s
  done
  return $rc
}
timed /tmp/node .devtools/check.mjs --prebuilt .devtools/prebuilt/manifest.json --out "$OUT/main" "$@" 2>&1 | tee "$OUT/main.log"
status=$?
if [ -n "${KERNELS:-}" ]; then
  # KERNELS_GEMM, else MC_CUDA_GEMM as the caller set it; neither: each GPU's default engine.
  kernel_checks "$OUT/kernels.log" "${KERNELS_GEMM:-${MC_CUDA_GEMM:-}}" "$KERNELS" || status=$?
fi
# The baseline is the main check's peer: it runs before the optional A/B extras, so that BUDGET_S cuts those first.
if [ "${BASELINE:-0}" = 1 ] && [ -f .devtools/base/.devtools/check.mjs ]; then
  echo "=== [$((SECONDS - started)) s] baseline"
  tar -xJf .devtools/base/.devtools/prebuilt.tar.xz -C .devtools/base/.devtools
  (cd .devtools/base && timed /tmp/node .devtools/check.mjs --prebuilt .devtools/prebuilt/manifest.json --out "$OUT/base" "$@" --only "${BASELINE_ONLY:-decode,prefill}" 2>&1 | tee "$OUT/base.log")
fi
if [ -n "${PREFETCH_AB:-}" ]; then
  # One process per amount (a library reads MC_CUDA_PREFETCH_MB when it first initializes).
  for mb in $PREFETCH_AB 0; do
    variant prefetch "--prefetch-mb $mb" "$@" --only "${PREFETCH_ONLY:-decode}" ${PREFETCH_CASES:+--cases "$PREFETCH_CASES"} --prefetch-mb "$mb"
  done
fi
# decode_ab GROUP CASES SETTING...: decode once per setting (NAME=VALUE words; "" for the defaults), each
# in its own process (a library reads its MC_CUDA_* switches when it first initializes), CASES limiting
# the configs (empty: all), with the check options this script was given.
# SECTIONS (default decode): the check's sections each arm runs.
decode_ab() {
  local group=$1 cases=$2 setting
  shift 2
  for setting in "$@"; do
    # A subshell keeps the setting to this arm; its status comes back as its exit.
    # shellcheck disable=SC2086
    ( if [ -n "$setting" ]; then export $setting; fi
      variant "$group" "${setting:-defaults again}" "${check_args[@]}" --only "${SECTIONS:-decode}" ${cases:+--cases "$cases"}
      exit "$status" ) || status=$?
  done
}
if [ "${CHAIN_AB:-0}" = 1 ]; then
  # Each dense layer's wo, w1|w3, w2 and the next wq|wk|wv in one cooperative kernel (MC_CUDA_DECODE=chain,
  # run 18), then with the layer's decode attention and combine in it too (layer, run 19), then the
  # defaults again; Mixtral has no chain (its arms run the same code). Since run 26 the layer arm's
  # attention splits for about 256 blocks and the others' for about 512: add MC_CUDA_ATTN_BLOCKS=256
  # to this script's environment to compare like with like.
  decode_ab chain "${CHAIN_CASES:-}" "MC_CUDA_DECODE=chain" "MC_CUDA_DECODE=layer" ""
fi
if [ "${X_AB:-0}" = 1 ]; then
  # wo and w2 copy x into shared memory (MC_CUDA_X=shared), then read it in the stream (the default since
  # run 22), twice over: the difference is ~2%, the spread between identical runs.
  SECTIONS=${X_ONLY:-decode} decode_ab x "${X_CASES:-}" "MC_CUDA_X=shared" "" "MC_CUDA_X=shared" ""
fi
if [ "${ATTN_AB:-0}" = 1 ]; then
  # The decode attention split for about 256 blocks (MC_CUDA_ATTN_BLOCKS=256, before run 26), then the defaults
  # (512), twice over; at long contexts by default (ATTN_ONLY=decode,long adds the short ones).
  SECTIONS=${ATTN_ONLY:-long} decode_ab attn "${ATTN_CASES:-}" "MC_CUDA_ATTN_BLOCKS=256" "" "MC_CUDA_ATTN_BLOCKS=256" ""
fi
if [ -n "${CLUSTER_AB:-}" ]; then
  # The decode attention as one kernel, a cluster of blocks a KV head merging its splits in distributed shared
  # memory (MC_CUDA_ATTN_CLUSTER=N: at positions up to N), then the split kernel and its combine (the
  # default), twice over; short contexts by default (CLUSTER_ONLY=decode,long adds the long ones).
  SECTIONS=${CLUSTER_ONLY:-decode} decode_ab cluster "${CLUSTER_CASES:-}" "MC_CUDA_ATTN_CLUSTER=$CLUSTER_AB" "" "MC_CUDA_ATTN_CLUSTER=$CLUSTER_AB" ""
fi
if [ "${CLUSTER_CHECK:-0}" = 1 ]; then
  ( export MC_CUDA_ATTN_CLUSTER=37
    variant cluster-check "MC_CUDA_ATTN_CLUSTER=37: logits" "$@" --only logits --dtypes bf16
    exit "$status" ) || status=$?
fi
if [ "${PDL_AB:-0}" = 1 ]; then
  # Run 14's settings, the defaults again last.
  decode_ab pdl "${PDL_CASES:-}" "MC_CUDA_PDL=all" "MC_CUDA_PDL_TRIGGER=last-rows" "MC_CUDA_PDL=all MC_CUDA_PDL_TRIGGER=last-rows" "MC_CUDA_PDL=off" ""
fi
if [ "${A16_AB:-0}" = 1 ]; then
  # Same libraries, same process kind: only the environment differs (read when a library first initializes).
  for rows in 0 64; do
    MC_CUDA_A16=$rows variant a16 "MC_CUDA_A16=$rows" "$@" --only prefill
  done
fi
if [ "${DEEP_AB:-0}" = 1 ]; then
  # The 8-stage small tile for grids smaller than the GPU (run 16) against the 4-stage one, same libraries.
  MC_CUDA_GEMM_DEEP=0 variant deep "MC_CUDA_GEMM_DEEP=0" "$@" --only prefill
fi
if [ "${WGMMA:-0}" = 1 ]; then
  # Each engine in its own process: a library reads MC_CUDA_GEMM once, when it first initializes.
  # bf16 and f16 only: f32 weights have no tensor-core GEMM, so their checks do not depend on the engine.
  wg_sections=kernels,logits wg_status=0
  if [ -n "${WGMMA_KERNELS:-}" ]; then
    # Only the named cases' kernel checks (their prebuilt checkers, as KERNELS runs them): every case's
    # takes minutes, Mistral Large 2's float64 reference the most.
    wg_sections=logits
    kernel_checks "$OUT/wgmma-all.log" wgmma-all "$WGMMA_KERNELS" || wg_status=$?
  fi
  echo "=== [$((SECONDS - started)) s] wgmma-all: $wg_sections" | tee -a "$OUT/wgmma-all.log"
  timed /tmp/node .devtools/check.mjs --prebuilt .devtools/prebuilt/manifest.json --out "$OUT/wgmma-all" --gemm wgmma-all --only "$wg_sections" --dtypes bf16,f16 2>&1 | tee -a "$OUT/wgmma-all.log"
  s=${PIPESTATUS[0]}
  [ "$s" = 0 ] || wg_status=$s
  [ "$wg_status" = 0 ] || status=$wg_status
  if [ "$wg_status" = 0 ]; then
    # The default engine (wgmma where the launch judges it faster) against mma.sync alone, its A/B peer.
    echo "=== [$((SECONDS - started)) s] mma: prefill timing"
    timed /tmp/node .devtools/check.mjs --prebuilt .devtools/prebuilt/manifest.json --out "$OUT/mma" --gemm mma --only prefill 2>&1 | tee "$OUT/mma.log"
    s=${PIPESTATUS[0]}
    [ "$s" = 0 ] || status=$s
  fi
fi
if [ "${PDL_CHECK:-0}" = 1 ]; then
  # Run 14's PDL settings (MC_CUDA_PDL=all, MC_CUDA_PDL_TRIGGER=last-rows) checked before any becomes a
  # default: the kernel checks (kernels.cu starts each checked kernel while the one writing its inputs
  # still runs: Staging) and the bf16 logits, whose decode graph then overlaps every boundary it can.
  for case in tiny-dense.bf16 tiny-moe.bf16 mistral-7b-v0.1.bf16; do
    binary=$(kernel_check "$case") || { status=1; continue; }
    echo "=== [$((SECONDS - started)) s] kernel checks of $case, MC_CUDA_PDL=all MC_CUDA_PDL_TRIGGER=last-rows" | tee -a "$OUT/pdl-check.log"
    MC_CUDA_PDL=all MC_CUDA_PDL_TRIGGER=last-rows timed "$binary" "$RANDOM" 37 130 2>&1 | grep -v '^ok ' | tee -a "$OUT/pdl-check.log"
    s=${PIPESTATUS[0]}
    [ "$s" = 0 ] || status=$s
  done
  ( export MC_CUDA_PDL=all MC_CUDA_PDL_TRIGGER=last-rows
    variant pdl-check "MC_CUDA_PDL=all MC_CUDA_PDL_TRIGGER=last-rows: logits" "$@" --only logits --dtypes bf16
    exit "$status" ) || status=$?
fi
if [ "${SANITIZE:-0}" = 1 ]; then
  # The checks draw fresh inputs and compare with float64; under the sanitizer, shared-memory races
  # and barrier misuse are reported even where the numbers happen to come out right.
  for case in tiny-moe.bf16 mistral-7b-v0.1.bf16; do
    binary=$(kernel_check "$case") || { status=1; continue; }
    for tool in memcheck racecheck synccheck; do
      echo "=== [$((SECONDS - started)) s] compute-sanitizer --tool $tool: $case"
      # One log for all six (the device tool returns at most 8 files from \$OUT).
      timed compute-sanitizer --tool "$tool" --error-exitcode 9 "$binary" 1 37 130 2>&1 | tail -n 25 | tee -a "$OUT/sanitize.log"
      s=${PIPESTATUS[0]}
      [ "$s" = 0 ] || status=$s
    done
  done
fi
if [ "${PROFILE:-0}" = 1 ]; then
  echo "=== [$((SECONDS - started)) s] profile"
  timed /tmp/node .devtools/profile.mjs --prebuilt .devtools/prebuilt/manifest.json --out "$OUT/profile" 2>&1 | tee "$OUT/profile.log"
fi
if [ -n "${PROFILE_PREFILL:-}" ]; then
  # One prefill of that many tokens per kernel (ncu), Mistral-7B unless PROFILE_CASE names another config.
  echo "=== [$((SECONDS - started)) s] profile of a ${PROFILE_PREFILL}-token prefill"
  timed /tmp/node .devtools/profile.mjs --prebuilt .devtools/prebuilt/manifest.json --case "${PROFILE_CASE:-mistral-7b-v0.1}" --prefill "$PROFILE_PREFILL" --out "$OUT/profile-prefill" 2>&1 | tee "$OUT/profile-prefill.log"
fi
echo "=== [$((SECONDS - started)) s] done"
exit $status
