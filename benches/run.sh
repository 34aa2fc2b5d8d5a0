#!/usr/bin/env bash
# Side-by-side macro benchmarks (issue 7): tapedeck against nginx and wrk on this machine, in one
# run, reported as ratios. Not part of CI: it takes many minutes and wants the whole machine.
#
#   benches/run.sh            full run (≈ 30 min on 2 cores), writes benches/results-macro.md
#   benches/run.sh --smoke    a few seconds per section, to check the harness works
#   SECTIONS=proxy,half benches/run.sh    only some sections (proxy, half, growth, replay, memory, mock)
#   TAPEDECK=target/debug/tapedeck benches/run.sh --smoke   use this binary, skip the release build
#   MACRO_ARGS="--cpu-cap 0 --seal-compare" benches/run.sh   extra benches/macro.py flags
#
# The proxy under test is capped at 50 % of CPU 0 (--cpu-cap; cgroup v2 cpu.max, else cgroup v1
# cpu.cfs_quota_us, else a busy loop sharing its core: the report says which), so that wrk and
# the upstream on CPU 1 are never the limit. Per case: req/s, the proxy's CPU µs per request
# (/proc/PID/stat, all threads), peak RSS, drops; ratios to nginx-as-proxy in the same run.
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
  # The shipped build: fat LTO, one codegen unit ([profile.dist] in Cargo.toml).
  cargo build --profile dist --bin tapedeck
  TAPEDECK="${CARGO_TARGET_DIR:-target}/dist/tapedeck"
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
# shellcheck disable=SC2086 # MACRO_ARGS is a list of flags
python3 benches/macro.py --bin "$TAPEDECK" --out "$out.body" ${smoke} \
  ${SECTIONS:+--sections "$SECTIONS"} ${MACRO_ARGS:-}
cat "$out.head" "$out.body" > "$out"
rm -f "$out.head" "$out.body"
echo "results: $out"
