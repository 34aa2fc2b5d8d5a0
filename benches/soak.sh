#!/usr/bin/env bash
# Soak (issue 8): a fixed request rate through `tapedeck record` for a long time, sampling the
# proxy's resident memory and open file descriptors every few seconds. Both must stay flat.
# Not part of CI (it takes 10 minutes and wants an idle machine).
#
#   benches/soak.sh                          600 s at 500 req/s, samples every 10 s
#   benches/soak.sh --duration 120           a shorter run (to check the harness)
#   benches/soak.sh --rate 1000 --interval 5
#   TAPEDECK=target/debug/tapedeck benches/soak.sh --duration 60   (skip the release build)
#
# Load: `tapedeck replay --rate N` (open loop, constant gaps) of a synthetic tape against the
# proxy, which forwards to an nginx upstream on loopback (every path answers 200 with a small
# JSON body). Prints one row per sample and a summary: requests sent, exchanges on the tape
# (lost = sent - recorded), RSS and fd growth between the first and the last sample.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=600
rate=500
interval=10
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v nginx >/dev/null 2>&1 || { echo "needs nginx (apt-get install nginx)" >&2; exit 2; }
if [ -z "${TAPEDECK:-}" ]; then
  cargo build --release --bin tapedeck
  TAPEDECK=target/release/tapedeck
fi
bin="$(realpath "$TAPEDECK")"

tmp="$(mktemp -d /tmp/tapedeck-soak.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}

up_port="$(free_port)"; proxy_port="$(free_port)"; admin_port="$(free_port)"
mkdir -p "$tmp/nginx"
cat > "$tmp/nginx.conf" <<NGINX
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$up_port backlog=4096;
    location / { default_type application/json; return 200 '{"ok":true,"soak":1}'; }
  }
}
NGINX
nginx -c "$tmp/nginx.conf" -g 'daemon off;' >"$tmp/nginx.log" 2>&1 &
pids+=($!)
wait_port "$up_port"

# The load: rate × duration exchanges (plus 5 % so the replay never runs dry early).
count=$(( rate * duration * 105 / 100 ))
"$bin" synth --out "$tmp/load" --count "$count" >/dev/null 2>&1

"$bin" record --listen "127.0.0.1:$proxy_port" --upstream "http://127.0.0.1:$up_port" \
  --tape "$tmp/tape" --admin "127.0.0.1:$admin_port" --threads 2 --grace-period 5s \
  >"$tmp/record.log" 2>&1 &
rec=$!
pids+=($rec)
wait_port "$proxy_port"

"$bin" replay --tape "$tmp/load" --target "proxy=http://127.0.0.1:$proxy_port" \
  --rate "$rate" --limit $(( rate * duration )) --allow-writes --allow-same-host \
  --quiet --json --out "$tmp/run" >"$tmp/replay.json" 2>"$tmp/replay.log" &
load=$!
pids+=($load)

sample() {  # elapsed_s rss_kib fds threads
  local rss fds thr
  rss="$(awk '/^VmRSS:/{print $2}' "/proc/$rec/status" 2>/dev/null || echo 0)"
  thr="$(awk '/^Threads:/{print $2}' "/proc/$rec/status" 2>/dev/null || echo 0)"
  fds="$(find "/proc/$rec/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
  printf '%s %s %s %s\n' "$1" "$rss" "$fds" "$thr"
}

series="$tmp/series"
: > "$series"
printf '%-6s %-12s %-10s %-8s %-14s\n' "t(s)" "RSS(MiB)" "open fds" "threads" "tape(MiB)"
start=$(date +%s)
while :; do
  now=$(( $(date +%s) - start ))
  read -r t rss fds thr <<<"$(sample "$now")"
  tape_mib="$(du -sm "$tmp/tape" 2>/dev/null | awk '{print $1}')"
  echo "$t $rss $fds $thr $tape_mib" >> "$series"
  printf '%-6s %-12s %-10s %-8s %-14s\n' "$t" "$(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}')" \
    "$fds" "$thr" "$tape_mib"
  kill -0 "$load" 2>/dev/null || break
  [ "$now" -ge $(( duration + 60 )) ] && { echo "replay overran by 60 s: stopping it" >&2; kill "$load"; break; }
  sleep "$interval"
done
wait "$load" || { echo "replay failed:" >&2; cat "$tmp/replay.log" >&2; exit 1; }

kill -TERM "$rec"
wait "$rec" || { echo "recorder exited non-zero:" >&2; tail -20 "$tmp/record.log" >&2; exit 1; }

read -r sent responses errors classes <<<"$(python3 - "$tmp/replay.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["targets"][0]
classes = ",".join(f"{k}:{v}" for k, v in sorted(t.get("status_classes", {}).items()))
print(t["requests"], t["responses"], t["errors"], classes or "-")
PY
)"
recorded="$("$bin" inspect "$tmp/tape" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["exchanges"])')"
echo
echo "rate: $rate req/s for ${duration}s: sent $sent, responses $responses ($classes), errors $errors;" \
  "exchanges on the tape: $recorded (lost: $(( responses - recorded )))"
awk 'NR==1{r0=$2; f0=$3} {r=$2; f=$3; if ($2>rmax) rmax=$2} END{
  printf "RSS first %.1f MiB, last %.1f MiB, max %.1f MiB; fds first %d, last %d\n", r0/1024, r/1024, rmax/1024, f0, f}' "$series"
