#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: nginx as a reverse proxy against
# tapedeck record (pass-through and recording everything) on both engines (issue 13).
#
# Method (the one of ../shared/notes/proxy-core.md): each proxy runs under
# `valgrind --tool=callgrind` (user-space instructions of every thread; deterministic, so machine
# load does not matter), in front of an nginx upstream on loopback serving a 278-byte JSON; one
# keep-alive curl connection sends N requests, then the proxy is stopped (SIGTERM; nginx: QUIT)
# and callgrind writes its counts. Run once with N = 400 and once with N = 2400; per request =
# (I(2400) − I(400)) / 2000, so start-up and shutdown cancel out. For the recorder, the counts
# are split by thread: the proxy's own threads, the hand-off forwarder, and the tape writer's
# spool and seal threads (the storage side of issue 13).
#
#   benches/callgrind.sh                      build the dist profile, measure, print the table
#   TAPEDECK=target/release/tapedeck benches/callgrind.sh   measure this binary instead
#   CASES="nginx hyper-pass" benches/callgrind.sh             only some rows
#   KEEP=DIR benches/callgrind.sh             keep the callgrind files in DIR (for
#                                             callgrind_annotate), one folder per run
#
# Needs valgrind, nginx and curl (Debian: valgrind nginx curl). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

. benches/callgrind_common.sh
require callgrind.sh valgrind nginx curl python3
measured_binary
CASES=${CASES:-"nginx hyper-pass hyper-record pingora-pass pingora-record"}
SMALL=400
LARGE=2400

# The upstream: nginx serving a 278-byte JSON, not measured.
up_port=$(free_port)
cat >"$work/up.conf" <<EOF
worker_processes 1;
pid $work/up.pid;
error_log $work/up-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$up_port;
    location = /small { default_type application/json; return 200 '$body'; }
  }
}
EOF
nginx -c "$work/up.conf" -g "daemon off;" >"$work/up.log" 2>&1 &
pids+=($!)
wait_port "$up_port"

# total_instructions FILE...: the sum of the "totals:" lines (one file per thread).
totals() {
  awk '/^totals:/ { s += $2 } END { printf "%d\n", s }' "$@"
}

# measure NAME N COMMAND...: runs COMMAND under callgrind, sends N requests, stops it.
# Prints "proxy handoff writer" instruction totals.
measure() {
  local name=$1 n=$2
  shift 2
  local port=$1
  shift
  local out="$work/cg.$name.$n"
  mkdir -p "$out"
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.%p" \
    "$@" >"$out/log" 2>&1 &
  local pid=$!
  pids+=($pid)
  wait_port "$port"
  curl -s --max-time 600 -K "$work/urls.$name.$n" >/dev/null
  if [ "$name" = nginx ]; then kill -QUIT "$pid"; else kill -TERM "$pid"; fi
  wait "$pid" || true
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP/$name.$n"
    cp "$out"/cg.* "$KEEP/$name.$n/"
  fi
  # Classify each thread's counts: the hand-off forwarder, the tape writer's threads (storage
  # code, no proxy code), and the rest (the proxy itself: workers, signals, start-up).
  local proxy=0 handoff=0 writer=0
  for f in "$out"/cg.*; do
    [ -f "$f" ] || continue
    local t
    t=$(totals "$f")
    if grep -q 'capture::handoff::forward' "$f"; then
      handoff=$((handoff + t))
    elif grep -q 'tapedeck_storage' "$f" && ! grep -q 'tapedeck_proxy' "$f"; then
      writer=$((writer + t))
    else
      proxy=$((proxy + t))
    fi
  done
  echo "$proxy $handoff $writer"
}

row() {
  local case=$1
  local port
  port=$(free_port)
  # One keep-alive connection: curl reuses it for every URL of its config file.
  for n in $SMALL $LARGE; do
    awk -v n="$n" -v u="url = \"http://127.0.0.1:$port/small\"" \
      'BEGIN { for (i = 0; i < n; i++) print u }' >"$work/urls.$case.$n"
  done
  local -a cmd
  case $case in
    nginx)
      cat >"$work/proxy.conf" <<EOF
worker_processes 1;
pid $work/proxy.pid;
error_log $work/proxy-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$up_port; keepalive 256; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
      cmd=(nginx -c "$work/proxy.conf" -g "daemon off; master_process off;")
      ;;
    *-pass | *-record)
      local engine=${case%-*} mode=${case#*-}
      cmd=("$TAPEDECK" record --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$up_port"
        --threads 1 --admin off --grace-period 1s --engine "$engine")
      if [ "$mode" = pass ]; then cmd+=(--no-record); else cmd+=(--tape "$work/tape-$case-\$N"); fi
      ;;
  esac
  local a b
  a=$(measure "$case" $SMALL "$port" "${cmd[@]//\$N/$SMALL}")
  b=$(measure "$case" $LARGE "$port" "${cmd[@]//\$N/$LARGE}")
  read -r pa ha wa <<<"$a"
  read -r pb hb wb <<<"$b"
  local d=$((LARGE - SMALL))
  echo "$case $(((pb - pa) / d)) $(((hb - ha) / d)) $(((wb - wa) / d))"
}

results=()
for c in $CASES; do
  echo "measuring $c ..." >&2
  results+=("$(row "$c")")
done

nginx_total=""
for r in "${results[@]}"; do
  read -r c p h w <<<"$r"
  [ "$c" = nginx ] && nginx_total=$((p + h + w))
done

echo
echo "Instructions per request (callgrind, all threads; (I($LARGE) − I($SMALL)) / $((LARGE - SMALL)); binary: $TAPEDECK)"
echo
echo "| proxy | proxy threads | hand-off | tape writer | total | vs nginx |"
echo "|---|---|---|---|---|---|"
for r in "${results[@]}"; do
  read -r c p h w <<<"$r"
  total=$((p + h + w))
  label=$c
  case $c in
    nginx) label="nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') reverse proxy (1 process, upstream keepalive)" ;;
    hyper-pass) label="tapedeck --engine hyper --no-record" ;;
    hyper-record) label="tapedeck --engine hyper, recording every exchange" ;;
    pingora-pass) label="tapedeck --engine pingora --no-record" ;;
    pingora-record) label="tapedeck --engine pingora, recording every exchange" ;;
  esac
  ratio="—"
  if [ -n "$nginx_total" ] && [ "$nginx_total" -gt 0 ]; then
    ratio=$(awk -v t="$total" -v n="$nginx_total" 'BEGIN { printf "%.2f", t / n }')
  fi
  fmt() { awk -v v="$1" 'BEGIN { printf "%.1fk", v / 1000 }'; }
  echo "| $label | $(fmt "$p") | $(fmt "$h") | $(fmt "$w") | $(fmt "$total") | $ratio |"
done
