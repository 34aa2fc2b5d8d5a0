#!/usr/bin/env bash
# Side-by-side macro benchmarks (issue 7): tapedeck against nginx and wrk on this machine, in one
# run, reported as ratios. Not part of CI: it takes many minutes and wants the whole machine.
#
#   benches/run.sh            full run (≈ 30 min on 2 cores), writes benches/results-macro.md
#   benches/run.sh --smoke    a few seconds per section, to check the harness works
#   SECTIONS=proxy,half benches/run.sh    only some sections (proxy, half, replay, memory, mock)
#   TAPEDECK=target/debug/tapedeck benches/run.sh --smoke   use this binary, skip the release build
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=""
[ "${1:-}" = "--smoke" ] && smoke="--smoke"

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi

if [ -z "${TAPEDECK:-}" ]; then
  cargo build --release --bin tapedeck
  TAPEDECK=target/release/tapedeck
fi
out=benches/results-macro.md
[ -n "$smoke" ] && out=$(mktemp --suffix=.md)
{
  echo "# Macro benchmark run"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
  echo "- nginx: $(nginx -v 2>&1 | sed 's/.*nginx\///'), wrk: $(wrk --version 2>&1 | head -1 | awk '{print $2}'), h2load: $(h2load --version 2>&1 | head -1 | awk '{print $NF}')"
  echo "- command: benches/run.sh ${smoke} (binary: $TAPEDECK)"
  echo
} > "$out.head"
python3 benches/macro.py --bin "$TAPEDECK" --out "$out.body" ${smoke} \
  ${SECTIONS:+--sections "$SECTIONS"}
cat "$out.head" "$out.body" > "$out"
rm -f "$out.head" "$out.body"
echo "results: $out"
