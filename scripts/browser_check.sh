#!/usr/bin/env bash
# Opens report.html in headless Chromium (Debian's `chromium`), takes a screenshot and checks
# the rendered page: every plot present and drawn, the verdict shown, no console message, no
# reference outside the file. Runs on the quickstart (PASS) and on the traced fault-injection
# sweep (FAIL, with heat maps).
#
#   bash scripts/browser_check.sh [--require] [--screenshot PATH]
#
# Without chromium it says so and exits 0, unless --require (CI installs chromium and
# requires it). --screenshot copies the quickstart's screenshot to PATH (docs/ keeps one).
set -euo pipefail
cd "$(dirname "$0")/.."
require=0
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --require) require=1 ;;
    --screenshot) keep="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
chrome="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$chrome" ]; then
  if [ "$require" = 1 ]; then
    echo "browser check: chromium not found (apt-get install -y --no-install-recommends chromium)" >&2
    exit 1
  fi
  echo "browser check SKIPPED: chromium not found (apt-get install -y --no-install-recommends chromium)"
  exit 0
fi
bin=target/release/driftsweep
[ -x "$bin" ] || cargo build --release --locked
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for cfg in configs/quickstart.yaml configs/b3_66_trace_inject.yaml; do
  name="$(basename "$cfg" .yaml)"
  out="$work/$name"
  # The sweep's own verdict is not under test here (the injected one fails on purpose).
  "$bin" run "$cfg" --out "$out" --no-progress >/dev/null || true
  [ -f "$out/report.html" ] || { echo "browser check: $out/report.html was not written" >&2; exit 1; }
  # An empty profile per page: no network, no first-run UI, nothing remembered.
  flags=(--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
         --disable-component-update --disable-sync --hide-scrollbars --enable-logging=stderr --v=0)
  url="file://$(cd "$out" && pwd)/report.html"
  timeout 120 "$chrome" "${flags[@]}" --user-data-dir="$work/profile-dom-$name" \
    --dump-dom "$url" >"$work/$name.dom" 2>"$work/$name.log"
  timeout 120 "$chrome" "${flags[@]}" --user-data-dir="$work/profile-shot-$name" \
    --window-size=1400,2200 --screenshot="$work/$name.png" "$url" >/dev/null 2>>"$work/$name.log"
  python3 scripts/browser_check.py "$out" "$work/$name.dom" "$work/$name.log" "$work/$name.png" || status=1
  if [ -n "$keep" ] && [ "$name" = quickstart ]; then
    cp "$work/$name.png" "$keep"
  fi
done
exit $status
