#!/usr/bin/env bash
# Renders the demo's report.html in headless Chromium and writes a screenshot, to check by eye
# that the page renders (not run in CI). Needs Debian's `chromium` (apt-get install -y chromium).
#
#   scripts/check-report-html.sh [SCREENSHOT.png]     (default: target/report-html/report.png)
#
# Exits non-zero when the demo or Chromium fails, when the page references anything outside
# itself, or when the screenshot is missing or blank-sized.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out_png="${1:-$root/target/report-html/report.png}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out_png")"

command -v chromium >/dev/null || { echo "chromium not found: apt-get install -y chromium" >&2; exit 2; }

cargo build --quiet --bin tapedeck --manifest-path "$root/Cargo.toml"
"$root/target/debug/tapedeck" demo --out "$work/demo" >"$work/demo.log" 2>&1 || {
    cat "$work/demo.log" >&2; echo "demo failed" >&2; exit 1; }
html="$work/demo/report/report.html"
test -s "$html" || { echo "no report.html written" >&2; exit 1; }

# Self-contained: no external resources in markup.
if grep -Eiq '<(script|link|img|iframe)\b|(src|href)=["'"'"']|url\(' "$html"; then
    echo "report.html references external resources" >&2; exit 1
fi

# --disable-background-networking etc.: the browser itself makes no requests either.
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$work/profile" \
    --screenshot="$out_png" --window-size=1280,2000 "file://$html" >"$work/chromium.log" 2>&1 || {
    cat "$work/chromium.log" >&2; echo "chromium failed" >&2; exit 1; }
size=$(stat -c %s "$out_png" 2>/dev/null || echo 0)
if [ "$size" -lt 20000 ]; then
    echo "screenshot $out_png is suspiciously small ($size bytes)" >&2; exit 1
fi
echo "report.html rendered: $out_png ($size bytes); look at it."
