# Shared by benches/callgrind.sh and benches/callgrind_replay.sh (sourced, not run): the tool
# check and the binary to measure, a scratch directory whose background processes (PIDs in
# `pids`) are stopped on exit, port helpers, and the 278-byte JSON body both measure with.

# require SCRIPT TOOL...: exits 2 naming the first tool SCRIPT needs that is not installed.
require() {
  local script=$1
  shift
  for p in "$@"; do
    command -v "$p" >/dev/null 2>&1 || { echo "$script needs $p" >&2; exit 2; }
  done
}

# The binary to measure: $TAPEDECK, or the dist build (built now).
measured_binary() {
  if [ -z "${TAPEDECK:-}" ]; then
    cargo build --profile dist --bin tapedeck >&2
    TAPEDECK="${CARGO_TARGET_DIR:-target}/dist/tapedeck"
  fi
}

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 1 600); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

body='{"id":4711,"name":"Grace M Hopper","email":"grace.b.hopper@example.test","plan":"teams","active":true,"created_at":"2025-03-14T08:00:00Z","roles":["admin","billing"],"settings":{"theme":"dark","locale":"en-US","tz":"Europe/Berlin"},"score":982,"tags":["early-adopter","mentor"]}'
[ ${#body} -eq 278 ] || { echo "body is ${#body} bytes, not 278" >&2; exit 2; }
