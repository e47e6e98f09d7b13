# Sourced by the GPU scripts: the driftsweep CUDA binary needs the CUDA 13 runtime, cuBLAS and
# cuRAND (docs/cuda.md). Where the system has none on its library path, use the ones a PyTorch
# cu13x install ships as wheels.
if ! ldconfig -p | grep -q 'libcublas.so.13'; then
  for lib in libcublas.so.13 libcudart.so.13 libcurand.so.10; do
    d=$(find / \( -path /proc -o -path /sys \) -prune -o -name "$lib" -print 2>/dev/null | head -1)
    [[ -n $d ]] && LD_LIBRARY_PATH=$(dirname "$d")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export LD_LIBRARY_PATH
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi
