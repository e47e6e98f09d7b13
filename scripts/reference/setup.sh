#!/usr/bin/env bash
# Makes .reference-venv/ (git-ignored) with numpy and the `gguf` package from PyPI, for the
# float64 reference forward passes in scripts/reference/ and tests/reference.rs. Does nothing
# when the environment already imports both.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.reference-venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import numpy, gguf" 2>/dev/null; then
  echo "$venv: present"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/reference/requirements.txt
"$venv/bin/python" -c "import numpy, gguf; print('$venv: numpy', numpy.__version__, 'gguf ok')"
