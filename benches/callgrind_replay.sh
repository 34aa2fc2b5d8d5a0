#!/usr/bin/env bash
# Instructions per replayed request, counted by callgrind (issue 14): `tapedeck replay --max`
# closed loop of a recorded `GET /small` tape against nginx, every result written to a tape.
#
# Method (the one of benches/callgrind.sh): the replay runs under `valgrind --tool=callgrind
# --separate-threads=yes` (user-space instructions of every thread; deterministic, so machine
# load does not matter) with `--concurrency 64 --threads 1 --limit N` against an nginx on
# loopback (one worker) serving a 278-byte JSON; it ends on its own after N requests and
# callgrind writes one file per thread. Run once with N = 2000 and once with N = 12000; per
# request = (I(12000) − I(2000)) / 10000, so start-up (opening 64 connections, the runtimes)
# and the fixed part of shutdown cancel out; what the seal at close costs per row stays in.
# The tape is recorded first (12,000 requests through `tapedeck record`, one keep-alive curl
# connection), so it carries what curl sends (Host, User-Agent, Accept).
#
# Counts are split by thread: the sending thread (hyper's client, tokio, building results), the
# tape reader (Parquet decode, origins prepared), the results thread, the result tape's spool
# (Arrow IPC) and seal (Parquet + zstd) threads, and the rest (main thread, start-up).
#
#   benches/callgrind_replay.sh                      build the dist profile, measure, print the table
#   TAPEDECK=target/release/tapedeck benches/callgrind_replay.sh   measure this binary instead
#   CASES="h1 h2c" benches/callgrind_replay.sh       HTTP/1.1 (default) and/or h2c (4 connections)
#   KEEP=DIR benches/callgrind_replay.sh             keep the callgrind files in DIR (for
#                                                    callgrind_annotate), one folder per run
#
# Needs valgrind, nginx and curl (Debian: valgrind nginx curl). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

. benches/callgrind_common.sh
require callgrind_replay.sh valgrind nginx curl python3
measured_binary
CASES=${CASES:-"h1"}
SMALL=2000
LARGE=12000

# The target: nginx serving a 278-byte JSON over HTTP/1.1 and h2c, not measured.
h1_port=$(free_port)
h2c_port=$(free_port)
cat >"$work/up.conf" <<EOF
worker_processes 1;
pid $work/up.pid;
error_log $work/up-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  http2_max_requests 100000000;
  http2_max_concurrent_streams 1024;
  server {
    listen 127.0.0.1:$h1_port backlog=4096;
    listen 127.0.0.1:$h2c_port http2 backlog=4096;
    location = /small { default_type application/json; return 200 '$body'; }
  }
}
EOF
nginx -c "$work/up.conf" -g "daemon off;" >"$work/up.log" 2>&1 &
pids+=($!)
wait_port "$h1_port"
wait_port "$h2c_port"

# The tape: LARGE requests recorded through `tapedeck record` (not measured).
rec_port=$(free_port)
"$TAPEDECK" record --listen "127.0.0.1:$rec_port" --upstream "http://127.0.0.1:$h1_port" \
  --tape "$work/tape" --threads 1 --admin off --grace-period 1s >"$work/rec.log" 2>&1 &
rec_pid=$!
pids+=($rec_pid)
wait_port "$rec_port"
awk -v n="$LARGE" -v u="url = \"http://127.0.0.1:$rec_port/small\"" \
  'BEGIN { for (i = 0; i < n; i++) print u }' >"$work/urls"
curl -s --max-time 600 -K "$work/urls" >/dev/null
kill -TERM "$rec_pid"
wait "$rec_pid" || { echo "the recorder failed: $(tail -5 "$work/rec.log")" >&2; exit 2; }

# total FILE...: the sum of the "totals:" lines.
totals() {
  awk '/^totals:/ { s += $2 } END { printf "%d\n", s }' "$@"
}

# What a thread did, from the functions in its callgrind file. Valgrind reuses a finished
# thread's number (and file) for the next thread, so the blocking thread that closes the result
# tape shares the results thread's file ("results" includes closing).
classify() {
  local f=$1
  if grep -q 'engine::origin::replay_origin' "$f"; then echo send
  elif grep -q 'tapedeck_storage::seal::Sealer::seal' "$f"; then echo seal
  elif grep -q 'tapedeck_storage::spool::Spooler::flush' "$f"; then echo spool
  elif grep -q 'TapeSender::append_batch' "$f"; then echo results
  elif grep -q 'tapedeck_storage::reader::Tape::scan' "$f"; then echo reader
  else echo other
  fi
}

KINDS="send reader results spool seal other"

# measure CASE N: runs the replay of N requests under callgrind; prints one total per kind.
measure() {
  local case=$1 n=$2
  local out="$work/cg.$case.$n"
  mkdir -p "$out"
  local -a target
  case $case in
    h1) target=(--target "t=http://127.0.0.1:$h1_port") ;;
    h2c) target=(--target "t=h2c://127.0.0.1:$h2c_port" --connections 4) ;;
    *) echo "unknown case $case (h1, h2c)" >&2; exit 2 ;;
  esac
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.%p" \
    "$TAPEDECK" replay --tape "$work/tape" --out "$work/out.$case.$n" --max --concurrency 64 \
    --threads 1 --limit "$n" --allow-same-host --quiet --json "${target[@]}" \
    >"$out/summary.json" 2>"$out/log" || {
    echo "replay under callgrind failed: $(tail -5 "$out/log")" >&2
    exit 2
  }
  python3 - "$out/summary.json" "$n" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
t = s["targets"][0]
if s["results_written"] != n or t["errors"] or t["status_classes"].get("2xx") != n:
    sys.exit(f"replay wrote {s['results_written']} results of {n}, {t['errors']} errors, "
             f"statuses {t['status_classes']}")
EOF
  declare -A sum=()
  for k in $KINDS; do sum[$k]=0; done
  for f in "$out"/cg.*; do
    [ -f "$f" ] || continue
    local k
    k=$(classify "$f")
    sum[$k]=$((sum[$k] + $(totals "$f")))
  done
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP/$case.$n"
    cp "$out"/cg.* "$KEEP/$case.$n/"
  fi
  local line=""
  for k in $KINDS; do line+="${sum[$k]} "; done
  echo "$line"
}

fmt() { awk -v v="$1" 'BEGIN { printf "%.1fk", v / 1000 }'; }

echo
echo "Instructions per replayed request (callgrind, all threads; (I($LARGE) − I($SMALL)) / $((LARGE - SMALL)); binary: $TAPEDECK)"
echo
echo "| case | total | sending | reader | results | spool | seal | other |"
echo "|---|---|---|---|---|---|---|---|"
for c in $CASES; do
  echo "measuring $c ..." >&2
  read -r -a a <<<"$(measure "$c" $SMALL)"
  read -r -a b <<<"$(measure "$c" $LARGE)"
  d=$((LARGE - SMALL))
  row="" total=0
  for i in 0 1 2 3 4 5; do
    v=$(((b[i] - a[i]) / d))
    total=$((total + v))
    row+=" $(fmt "$v") |"
  done
  label=$c
  case $c in
    h1) label="HTTP/1.1, --concurrency 64" ;;
    h2c) label="h2c, --concurrency 64 --connections 4" ;;
  esac
  echo "| $label | $(fmt "$total") |$row"
done
