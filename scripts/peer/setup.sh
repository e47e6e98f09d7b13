#!/usr/bin/env bash
# Makes .peer-venv with the peer's stack (PyTorch, transformers, and the gguf reader it uses
# to dequantize the SmolLM2 GGUF). The PyPI torch wheel for Linux is the CUDA build and pulls
# about 3 GB of NVIDIA libraries; it runs on the CPU all the same. Versions as measured.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -x .peer-venv/bin/python ] && .peer-venv/bin/python -c "import torch, transformers, gguf, safetensors" 2>/dev/null; then
  echo ".peer-venv: present"
  exit 0
fi
python3 -m venv .peer-venv
.peer-venv/bin/pip install -q torch==2.15.0 transformers==5.23.0 gguf==0.19.0 accelerate==1.15.0 \
  numpy safetensors
.peer-venv/bin/python -c "import torch, transformers; print('peer ready: torch', torch.__version__, 'transformers', transformers.__version__)"
