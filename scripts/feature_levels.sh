#!/usr/bin/env bash
# The library's unit tests on the x86-64 feature levels below this CPU's, under qemu-user.
#
# Why: gemm (through candle), candle's own conversions, glibc's `exp` and this project's
# kernels pick their code by the CPU's features at run time, and each level sums in another
# order. The bit-identity tests (the one-row kernels against candle's product, the
# comparator's exp against the C library, the layers against candle's ops) therefore prove
# something only for the level they ran on. qemu-user's `-cpu` model hides the features the
# model lacks from CPUID, so gemm, candle, glibc and the kernels here all take that level's
# code, and the same tests run there as they would on such a CPU. qemu's TCG emulates AVX2,
# FMA and F16C (since 7.2) with IEEE rounding, but not AVX-512: the native run covers that.
# Timings under emulation mean nothing; only the bits are checked.
#
# Levels: x86-64-v3 (`-cpu Haswell-v4`: AVX2, FMA, F16C; gemm's V3 kernels, the 8-lane
# one-row kernels, the comparator's 4-lane exp) and x86-64-v2 (`-cpu Nehalem-v2`: SSE4.2, no
# AVX; gemm's scalar kernels, candle's product everywhere, the library's exp).
#
# Usage: bash scripts/feature_levels.sh [--require] [TEST FILTER...]
#   --require  install qemu-user with apt-get when missing (CI), and fail rather than skip.
# Builds the release unit-test binary (the same one `cargo test --release` builds).
set -euo pipefail
cd "$(dirname "$0")/.."

require=0
if [[ ${1:-} == --require ]]; then
  require=1
  shift
fi

if [[ $(uname -m) != x86_64 ]]; then
  echo "feature_levels: x86-64 only (this is $(uname -m)); nothing to check" >&2
  exit $((require))
fi
if ! command -v qemu-x86_64 >/dev/null; then
  if [[ $require == 1 ]]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-user
  else
    echo "feature_levels: skipped: qemu-x86_64 not found (apt-get install qemu-user)" >&2
    exit 0
  fi
fi

bin=$(cargo test --release --locked --lib --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["kind"] == ["lib"] and m["profile"]["test"]:
        print(m["executable"])
')
if [[ -z $bin || ! -x $bin ]]; then
  echo "feature_levels: the library's unit-test binary was not found" >&2
  exit 1
fi

# The features each level must show and hide: a qemu that cannot emulate them would test
# the wrong level, so that is a failure, not a pass.
probe() {
  local cpu=$1
  qemu-x86_64 -cpu "$cpu" "$bin" --exact run::device::tests::simd_names_the_features_this_process_detects \
    --nocapture 2>/dev/null |
    sed -n 's/^cpu features: //p'
}

status=0
# The CPU models without the system features TCG does not emulate (qemu warns of each).
for level in "x86-64-v3 Haswell-v4,-pcid,-x2apic,-tsc-deadline,-invpcid,-spec-ctrl +avx2 +fma +f16c -avx512f" \
  "x86-64-v2 Nehalem-v2,-spec-ctrl -avx2 -fma -f16c"; do
  read -r name cpu _ <<<"$level"
  want=${level#* * }
  seen=$(probe "$cpu")
  for f in $want; do
    flag=${f:1}
    has=0
    [[ " $seen " == *" $flag "* ]] && has=1
    if { [[ $f == +* ]] && [[ $has == 0 ]]; } || { [[ $f == -* ]] && [[ $has == 1 ]]; }; then
      echo "feature_levels: $name: qemu -cpu $cpu shows [$seen], wanted $f" >&2
      exit 1
    fi
  done
  echo "== $name (qemu-x86_64 -cpu $cpu): $seen"
  start=$SECONDS
  # The reference worker's protocol tests drive a shell through pipes under time limits:
  # nothing in them depends on the CPU level, they run natively, and under emulation a
  # loaded machine can push them past their limits.
  if qemu-x86_64 -cpu "$cpu" "$bin" --test-threads 2 --skip reference::tests "$@"; then
    echo "== $name: passed in $((SECONDS - start)) s"
  else
    echo "== $name: FAILED" >&2
    status=1
  fi
done
exit $status
