#!/usr/bin/env bash
# Builds driftsweep with the `cuda` feature on a machine that has no GPU and no CUDA install.
# Everything comes from PyPI: NVIDIA's CUDA 13 wheels (nvcc, cudart, cuBLAS, cuRAND, NVRTC,
# CCCL headers), pinned through the cuda-toolkit meta-package, go into a venv under
# $DRIFTSWEEP_CUDA_HOME. The only thing the wheels lack is libcuda.so, the driver, which candle
# links at link time (cudarc `dynamic-linking`): a link-time stub is compiled from the list of
# driver functions in cudarc's own bindings and placed in lib/stubs, never on a run-time path.
# See docs/cuda.md.
#
#   bash scripts/build_cuda.sh            # install (once) and build target/cuda/release/driftsweep
#   bash scripts/build_cuda.sh --env      # install (once), print the exports, build nothing
#   bash scripts/build_cuda.sh --shared-target
#       # CI: build in the CPU build's target dir (target/, or CARGO_TARGET_DIR), reusing its
#       # compiled dependencies: only candle-core, candle-nn, candle-transformers (their features
#       # change), cudarc, candle-kernels (nvcc) and driftsweep compile. The CUDA binary is copied
#       # to <target>/cuda-shared/driftsweep, and the CPU binary <target>/release/driftsweep is put
#       # back (a `cargo build --release`: it compiles at most driftsweep itself) and checked to
#       # link no CUDA library.
#
# Environment (all optional):
#   CUDA_COMPUTE_CAP          one compute capability, default 90 (H100/H200; built as sm_90a)
#   CARGO_TARGET_DIR          default <repo>/target/cuda (never the CPU build's target/);
#                             with --shared-target, the CPU build's: default <repo>/target
#   DRIFTSWEEP_CUDA_HOME      wheel cache, default ~/.cache/driftsweep-cuda
#   DRIFTSWEEP_CUDA_TOOLKIT   cuda-toolkit meta-package version, default 13.0.3.0 (CUDA 13.0)
#   DRIFTSWEEP_CUDA_FEATURES  cargo features, default `cuda`; `cuda,cudnn` adds cuDNN
#   DRIFTSWEEP_CUDNN          nvidia-cudnn-cu13 version for `cudnn`, default 9.21.1.3
#   CUDAFORGE_THREADS         nvcc processes for candle's kernels, default all cores (nproc)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

env_only=0
shared=0
case "${1:-}" in
  --env) env_only=1 ;;
  --shared-target) shared=1 ;;
  "") ;;
  *) echo "usage: $0 [--env | --shared-target]" >&2; exit 2 ;;
esac

toolkit=${DRIFTSWEEP_CUDA_TOOLKIT:-13.0.3.0}
cache=${DRIFTSWEEP_CUDA_HOME:-$HOME/.cache/driftsweep-cuda}
cap=${CUDA_COMPUTE_CAP:-90}
features=${DRIFTSWEEP_CUDA_FEATURES:-cuda}
cudnn_version=${DRIFTSWEEP_CUDNN:-9.21.1.3}
if ((shared)); then
  target_dir=${CARGO_TARGET_DIR:-$repo/target}
else
  target_dir=${CARGO_TARGET_DIR:-$repo/target/cuda}
fi

say() { echo "build_cuda: $*" >&2; }
die() { echo "build_cuda: error: $*" >&2; exit 1; }

# One capability per build: candle-kernels (through cudaforge) passes exactly one
# -gencode=arch=compute_XX,code=sm_XX to nvcc, and parses CUDA_COMPUTE_CAP as a single value.
[[ $cap =~ ^(sm_)?[0-9]{2,3}[af]?$ ]] ||
  die "CUDA_COMPUTE_CAP='$cap': give one capability such as 90, 90a, 80 or 120 (no lists: candle builds for one architecture; build once per capability into its own CARGO_TARGET_DIR)"
case $toolkit in
  13.[0-4].*) ;;
  *) die "DRIFTSWEEP_CUDA_TOOLKIT='$toolkit': this script handles the CUDA 13.0-13.4 wheels (one nvidia/cu13 tree; cudarc 0.19 knows CUDA up to 13.4)" ;;
esac
command -v cargo >/dev/null || die "cargo not found"
command -v cc >/dev/null || die "cc not found (the host compiler nvcc and the stub need; apt-get install build-essential)"
command -v c++ >/dev/null || die "c++ not found (nvcc's host compiler; apt-get install g++)"
python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3 with venv and ensurepip is needed (apt-get install python3-venv)"

# 1. The wheels, in a venv of their own, keyed by the toolkit (and cuDNN) version.
packages=("cuda-toolkit[nvcc,crt,cudart,cublas,curand,nvrtc,cccl]==$toolkit")
venv=$cache/venv-$toolkit
if [[ ,$features, == *,cudnn,* ]]; then
  packages+=("nvidia-cudnn-cu13==$cudnn_version")
  venv=$venv-cudnn$cudnn_version
fi
stamp=$venv/.driftsweep-installed
if [[ ! -f $stamp ]]; then
  say "installing ${packages[*]} into $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}"
  touch "$stamp"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
root=$site/nvidia/cu13
[[ -x $root/bin/nvcc ]] || die "no nvcc under $root: the wheels did not install as expected"

# 2. Link-time names. The wheels ship only versioned libraries (libcublas.so.13); the linker's
#    -lcublas needs libcublas.so. Symlinks, in the cache only.
link_libs=(cudart cublas cublasLt curand nvrtc)
for name in "${link_libs[@]}"; do
  [[ -e $root/lib/lib$name.so ]] && continue
  so=
  for f in "$root/lib/lib$name.so."*; do
    [[ $f =~ /lib$name\.so\.[0-9]+$ ]] && so=${f##*/}
  done
  [[ -n $so ]] || die "no lib$name.so.N in $root/lib"
  ln -s "$so" "$root/lib/lib$name.so"
done
cudnn_root=
if [[ ,$features, == *,cudnn,* ]]; then
  cudnn_root=$site/nvidia/cudnn
  [[ -e $cudnn_root/lib/libcudnn.so ]] || ln -s libcudnn.so.9 "$cudnn_root/lib/libcudnn.so"
fi

# 3. The driver stub: libcuda.so with SONAME libcuda.so.1, every driver function cudarc declares
#    defined as returning CUDA_ERROR_UNKNOWN. The binary records only the SONAME; at run time the
#    driver's own libcuda.so.1 is loaded. The stub sits in lib/stubs, which is a link-search
#    path only (cudarc searches $CUDA_ROOT/lib/stubs) and never on LD_LIBRARY_PATH.
stub=$root/lib/stubs/libcuda.so
if [[ ! -f $stub ]]; then
  # cargo metadata names the source directory; cargo fetch makes sure it is unpacked (the CPU
  # build never needs cudarc, so a fresh machine does not have it yet).
  cargo fetch --locked --quiet
  cudarc_src=$(cargo metadata --locked --format-version 1 --features cuda --filter-platform x86_64-unknown-linux-gnu |
    python3 -c 'import json, os, sys
ps = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"]
print(os.path.dirname(ps[0]["manifest_path"]) if ps else "")')
  [[ -f $cudarc_src/src/driver/sys/mod.rs ]] || die "cudarc's sources not found (cargo metadata)"
  mkdir -p "$root/lib/stubs"
  tmp=$(mktemp -d)
  grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$cudarc_src/src/driver/sys/mod.rs" | tr -d ' (' |
    sed 's/^fn//' | sort -u | awk '{print "int " $1 "(void) { return 999; }"}' >"$tmp/stub.c"
  count=$(wc -l <"$tmp/stub.c")
  cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$stub" "$tmp/stub.c"
  rm -rf "$tmp"
  say "libcuda stub: $count driver functions from $(basename "$cudarc_src")"
fi

# 4. The environment candle-kernels (cudaforge: nvcc on PATH, CUDA_COMPUTE_CAP) and cudarc
#    (CUDA_ROOT and friends for link search; nvcc --version or CUDARC_CUDA_VERSION) read.
orig_path=$PATH
nvcc_release=$("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\),.*/\1 \2/p')
read -r cuda_major cuda_minor <<<"$nvcc_release"
exports=(
  "PATH=$root/bin:$PATH"
  "CUDA_ROOT=$root"
  "CUDA_PATH=$root"
  "CUDA_HOME=$root"
  "CUDA_TOOLKIT_ROOT_DIR=$root"
  "NVCC=$root/bin/nvcc"
  "CUDARC_CUDA_VERSION=${cuda_major}0${cuda_minor}0"
  "CUDA_COMPUTE_CAP=$cap"
  # cudaforge compiles candle's kernels on half the cores by default, yet nothing else can
  # compile meanwhile (candle-core waits for candle-kernels): all of them.
  "CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}"
  "CARGO_TARGET_DIR=$target_dir"
)
[[ -n $cudnn_root ]] && exports+=("CUDNN_LIB=$cudnn_root")
for e in "${exports[@]}"; do export "${e?}"; done
if ((env_only)); then
  for e in "${exports[@]}"; do printf 'export %q\n' "$e"; done
  echo "# run time, on this machine only (libcuda.so.1 comes from the GPU box's driver):"
  printf 'export %q\n' "LD_LIBRARY_PATH=$root/lib${cudnn_root:+:$cudnn_root/lib}"
  exit 0
fi

# 5. Build. --locked: the CPU build's Cargo.lock, unchanged.
say "CUDA $cuda_major.$cuda_minor ($("$root/bin/nvcc" --version | tail -2 | head -1)), compute cap $cap, features $features"
say "cargo build --release --locked --features $features (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
bin=$CARGO_TARGET_DIR/release/driftsweep
cpu_sum=
if ((shared)) && [[ -f $bin ]]; then
  cpu_sum=$(sha256sum <"$bin")
fi
start=$SECONDS
cargo build --release --locked --features "$features"
took=$((SECONDS - start))
[[ -x $bin ]] || die "no binary at $bin"
if ((shared)); then
  # The feature build replaced the CPU binary that tests and scripts run: copy the CUDA one
  # out, then let cargo put the CPU one back. Its artifacts are still in deps/ under their own
  # hash, so this compiles at most driftsweep (see below); it runs without the CUDA environment
  # so that it sees the CPU build's environment.
  mkdir -p "$CARGO_TARGET_DIR/cuda-shared"
  cp "$bin" "$CARGO_TARGET_DIR/cuda-shared/driftsweep"
  say "putting the CPU binary back: cargo build --release --locked"
  (
    for e in "${exports[@]}"; do unset "${e%%=*}"; done
    export PATH=$orig_path CARGO_TARGET_DIR=$target_dir
    cargo build --release --locked
  )
  # The invariant is that the binary there is a CPU one again. It is byte-identical unless
  # driftsweep's build script reran (it watches the git state: a new commit, an edit, and always
  # in a git worktree, where .git is a file); then driftsweep is recompiled for the CPU.
  if readelf -d "$bin" | grep -qE 'NEEDED.*lib(cuda|cudart)\.so'; then
    die "$bin still links CUDA after the CPU build was put back"
  fi
  if [[ -z $cpu_sum ]]; then
    say "CPU binary built: $bin (there was none before)"
  elif [[ $(sha256sum <"$bin") == "$cpu_sum" ]]; then
    say "CPU binary back, byte-identical: $bin"
  else
    say "CPU binary back, rebuilt (the git state changed since the CPU build): $bin"
  fi
  bin=$CARGO_TARGET_DIR/cuda-shared/driftsweep
fi

# 6. What the binary needs at run time, written beside it.
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
runpath=$(readelf -d "$bin" | sed -n 's/.*(R.*PATH).*\[\(.*\)\]/\1/p')
glibc=$(objdump -T "$bin" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -1)
glibcxx=$(objdump -T "$bin" | grep -oE 'GLIBCXX_[0-9.]+' | sort -uV | tail -1 || true)
size=$(stat -c %s "$bin")
info=$bin.cuda-build.txt
{
  echo "binary: $bin"
  echo "size_bytes: $size"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in ${took}s"
  echo "features: $features"
  echo "cuda_toolkit: $toolkit (nvcc $("$root/bin/nvcc" --version | sed -n 's/.*, V\(.*\)/\1/p'))"
  echo "compute_cap: $cap"
  echo "needed: $needed"
  echo "runpath: ${runpath:-none}"
  echo "newest_glibc_symbol: $glibc"
  echo "newest_glibcxx_symbol: ${glibcxx:-none}"
  echo "min_driver: 580 (CUDA 13.0; candle's kernels are PTX the driver JIT-compiles, so the driver must know this nvcc's PTX ISA)"
  "$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(nvidia|cuda)' |
    sed 's/^/wheel: /'
} >"$info"
cat "$info" >&2
[[ $needed == *"libcuda.so.1"* ]] || say "warning: libcuda.so.1 not among NEEDED"
[[ -z $runpath ]] || say "warning: the binary has a RUNPATH ($runpath)"
say "built in ${took}s: $bin ($((size / 1024 / 1024)) MiB)"
