#!/usr/bin/env bash
# Runs on a machine with an NVIDIA GPU, from the repository root, with a driftsweep binary
# built by scripts/build_cuda.sh: each B3.70 sweep twice on cuda:0 (are the GPU numbers
# bit-reproducible between two processes?), then `verify --all` on the first (within one
# process, against the stored numbers). Each results directory is packed into $OUT.
#
#   bash scripts/gpu/sweeps.sh BINARY OUT_DIR builtin|smollm2
set -uo pipefail
bin=$1 out=$2 which=$3
mkdir -p "$out"
case $which in
  builtin) config=configs/b3_70_all_dtypes.yaml ;;
  smollm2) config=configs/smollm2_b3_70.yaml ;;
  *) echo "usage: $0 BINARY OUT_DIR builtin|smollm2" >&2; exit 2 ;;
esac
source "$(dirname "$0")/cuda_libs.sh"
"$bin" --version
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv |
  tee "$out/gpu_$which.txt"
timer=()
[[ -x /usr/bin/time ]] && timer=(/usr/bin/time -v)
for rep in a b; do
  dir=results/gpu_${which}_$rep
  rm -rf "$dir"
  "${timer[@]}" "$bin" run "$config" --device cuda:0 --out "$dir" --no-progress \
    >"$out/run_${which}_$rep.log" 2>&1
  echo "run $which $rep: exit $?" | tee -a "$out/gpu_$which.txt"
  grep -E 'wall time|PASS|FAIL|INCOMPLETE|Maximum resident' "$out/run_${which}_$rep.log" |
    tee -a "$out/gpu_$which.txt"
done
python3 - "$which" <<'PY' | tee -a "$out/gpu_$which.txt"
import json, sys
w = sys.argv[1]
a, b = (json.load(open(f"results/gpu_{w}_{r}/report.json")) for r in "ab")
pa = {p["id"]: p["metrics"] for p in a["pairs"]}
pb = {p["id"]: p["metrics"] for p in b["pairs"]}
same = sum(1 for k in pa if pa[k] == pb.get(k))
print(f"two processes: {same}/{len(pa)} pairs with bit-identical metrics")
for k in sorted(pa):
    if pa[k] != pb.get(k):
        ma, mb = pa[k] or {}, pb.get(k) or {}
        moved = [m for m in ma if ma.get(m) != mb.get(m)]
        print(f"  differs: {k}: {', '.join(moved[:6])}")
PY
"$bin" verify "results/gpu_${which}_a" --all --device cuda:0 >"$out/verify_$which.log" 2>&1
echo "verify $which: exit $?" | tee -a "$out/gpu_$which.txt"
head -1 "$out/verify_$which.log" | tee -a "$out/gpu_$which.txt"
tar czf "$out/results_$which.tar.gz" --exclude='*.safetensors' \
  "results/gpu_${which}_a" "results/gpu_${which}_b"
