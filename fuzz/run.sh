#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each), in parallel, niced, and
# prints the executions and result per target. Usage: fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain it sets RUSTC_BOOTSTRAP=1
# (cargo-fuzz passes nightly-only flags); it builds without a sanitizer (safe Rust: the findings
# we look for are panics, overflows (debug assertions on), timeouts and runaway memory).
# Crashes land in fuzz/artifacts/<target>/; turn each into a regression test in the crate.
# FUZZ_TIMEOUT (default 30 s) is the per-input limit: tape_reader legitimately spends seconds on a
# small Parquet file that declares many rows when 5 targets share 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(json_diff route redact tape_reader rules_file har_import verdict_json serve_bodies)
fi
export RUSTC_BOOTSTRAP=1
FLAGS=(-a --sanitizer none)
cargo fuzz build "${FLAGS[@]}"

# Seed corpora: a real tape (sealed Parquet + spool segment) for the reader, small examples for
# the others. Seeds are regenerated each run; the corpus directories keep what the fuzzer found.
mkdir -p corpus/tape_reader corpus/json_diff corpus/route corpus/redact corpus/rules_file corpus/har_import corpus/verdict_json corpus/serve_bodies logs
BIN="../target/debug/tapedeck"
if [ -x "$BIN" ] && [ -z "$(ls -A corpus/tape_reader)" ]; then
  tmp="$(mktemp -d)"
  "$BIN" synth --out "$tmp/tape" --count 3 >/dev/null 2>&1 || true
  find "$tmp/tape" -type f \( -name '*.parquet' -o -name '*.arrows' \) -exec cp {} corpus/tape_reader/ \;
  rm -rf "$tmp"
fi
printf '\x08{"a":[1,2,{"b":"x"}],"c":null}\xff{"a":[2,1,{"b":"y"}],"d":1.5e3}' > corpus/json_diff/seed1
printf '/api/users/{id}\nGET /api/users/17?fields=a&page=2\nPOST /products/blue-shirt\nGET /products/red-shirt\nGET /products/green-hat\n' > corpus/route/seed1
printf '\x00x-api-key\xffsecret\xfftoken=abc&x=1\xff{"password":"hunter2","items":[{"pan":"4111"}],"e":"a@b.io"}' > corpus/redact/seed1
printf '\x05authorization\xffBearer t\xff\xff{"password": "cut-off' > corpus/redact/seed2
printf '{"log":{"version":"1.2","creator":{"name":"x","version":"1"},"entries":[{"startedDateTime":"2026-01-02T03:04:05.123Z","time":12.5,"request":{"method":"POST","url":"https://h:8443/a/b?x=1&y=%%20","httpVersion":"h2","headers":[{"name":":authority","value":"h"},{"name":"Authorization","value":"Bearer t"}],"queryString":[],"postData":{"mimeType":"application/json","text":"eyJhIjoxfQ==","encoding":"base64"},"headersSize":-1,"bodySize":7},"response":{"status":200,"statusText":"OK","httpVersion":"h2","headers":[{"name":"content-encoding","value":"gzip"}],"content":{"size":2,"mimeType":"application/json","text":"{}"},"redirectURL":"","headersSize":-1,"bodySize":2},"cache":{},"timings":{"blocked":-1,"dns":-1,"connect":-1,"send":1,"wait":10,"receive":1.5}}]}}' > corpus/har_import/seed1
printf '{"schema_version":1,"run_id":"r1","verdict":"fail","rollback":true,"score":40,"exit_code":1,"title":"GET /a p95 +900 %% (v1 \xe2\x86\x92 v2)","reasons":["GET /a slower"],"baseline":"baseline","candidate":"candidate","noise":"secondary","baseline_version":"v1","candidate_version":"v2","window_us":[1,2],"counts":{"paired":40},"routes":[{"route":"GET /a/{id}?q","verdict":"fail","score":40,"paired":40,"checks":[{"name":"latency","classification":"high","critical":true,"weight":1.0,"reason":"slower"}],"paths":[{"path":"$.email","kind":"missing","status":"regression","raw_rate":1.0,"example":{"origin_id":"0192aa00-0000-7000-8000-000000000001","baseline":"\"a@x\"","candidate":null}}],"errors":{},"latency":{}}],"route_keys":{"templates":[],"cardinality":50}}' > corpus/verdict_json/seed1
printf 'slo = [["GET /api/users/{id}: p95<300ms"]\n[settings]\nalpha = 0.05\n[[routes]]\ntemplate = "/api/users/{id}"\n[[ignore]]\nroute = "*"\npath = "$.ts"\n' > corpus/rules_file/seed1
printf '{"id":"argo-1","tape":["/t/a","/t/b"],"baseline":"http://b","candidate":"http://c","secondary":"http://s","baseline_version":"v1","candidate_version":"v2"}' > corpus/serve_bodies/seed1
printf '{"name":"web","namespace":"shop","phase":"Progressing","checksum":"6d8f/..x","metadata":{"tape":"/t","candidate":"http://canary","candidate_version":"v2","other":"x"}}' > corpus/serve_bodies/seed2
printf ' \r\n' > corpus/serve_bodies/seed3

pids=()
for t in "${TARGETS[@]}"; do
  mkdir -p "artifacts/$t"
  extra=()
  if [ "$t" = tape_reader ]; then
    # The reader turns panics of the Parquet decoder into corrupt-file errors (catch_unwind), but
    # libFuzzer's panic hook aborts first. Fork mode keeps fuzzing past them; each crash is saved
    # in artifacts/tape_reader/ to triage (`tapedeck inspect FILE` exits 2 naming the file when
    # the panic is caught; a real finding exits 101).
    extra=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  nice -n 10 cargo fuzz run "${FLAGS[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout="${FUZZ_TIMEOUT:-30}" -max_len=65536 \
    -print_final_stats=1 "${extra[@]}" >"logs/$t.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!TARGETS[@]}"; do
  if ! wait "${pids[$i]}"; then status=1; fi
done
printf '%-12s %14s %8s  %s\n' target executions exec/s result
for t in "${TARGETS[@]}"; do
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || true)"
  rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || true)"
  # Fork mode prints `#EXECS: cov: … oom/timeout/crash: O/T/C time: Ns …` lines instead.
  last="$(grep -E '^#[0-9]+: cov:' "logs/$t.log" | tail -n 1 || true)"
  if [ -z "$execs" ] && [ -n "$last" ]; then
    execs="$(echo "$last" | sed -E 's/^#([0-9]+):.*/\1/')"
    secs="$(echo "$last" | sed -E 's/.* time: ([0-9]+)s.*/\1/')"
    rate=$((execs / (secs > 0 ? secs : 1)))
  fi
  crashes="$(echo "$last" | sed -nE 's#.*oom/timeout/crash: [0-9]+/[0-9]+/([0-9]+).*#\1#p')"
  if [ -n "$crashes" ]; then
    if [ "$crashes" = 0 ]; then result=ok; else result="$crashes crash(es) to triage in fuzz/artifacts/$t/"; fi
  elif grep -q 'ERROR: libFuzzer\|panicked at\|SUMMARY: libFuzzer' "logs/$t.log"; then
    result="FINDING (see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
  else
    result=ok
  fi
  execs="${execs:-?}"
  rate="${rate:-?}"
  printf '%-12s %14s %8s  %s\n' "$t" "$execs" "$rate" "$result"
done
exit $status
