#!/usr/bin/env python3
"""Side-by-side macro benchmarks: tapedeck against nginx and wrk, on this machine, in one run.

Invoked by benches/run.sh (which installs nginx and wrk and builds tapedeck in release). Every
server binds 127.0.0.1 on a port picked at run time; every process is stopped by its PID; every
load run is bounded in time. Results are printed and written as Markdown (--out).

Pinning (2 cores): the proxy under test (tapedeck or nginx-as-proxy, one worker thread each) runs
on CPU 0; the load generator and the upstream nginx share CPU 1. Each pairing is repeated
--reps times interleaved (A, B, C, A, B, C, ...) and the median is reported, so machine noise hits
every side alike.

CPU cap (--cpu-cap PCT, issue 13): uncapped, wrk and the upstream on CPU 1 saturate before a lean
proxy does, so the ratios would measure the load generator. With a cap the proxy under test (all
its processes and threads) runs in a cgroup limited to PCT % of one core: cgroup v2 `cpu.max` when
the cpu controller is available there, else cgroup v1 `cpu.cfs_quota_us`. Where neither can be
created (no permission), the proxy's core is shared with a busy loop at the same priority, which
leaves it about half of the core whatever PCT says (the report says which mode ran).

Per case the report gives req/s and the proxy's CPU per request: utime + stime of every process of
the proxy (all threads; /proc/PID/stat) over the measured interval, divided by the requests wrk
completed, and the proxy's peak RSS (VmHWM). A proxy case spelled with ` close` (`/small close`)
sends every request on a new client connection (`Connection: close`).

Section `half` (after `proxy`): the proxies at an equal load, uncapped, at half of nginx's capped
rate, sent open loop by `tapedeck replay --rate`: each proxy's CPU per request at that load and
the p99 it adds over going to the upstream directly.
"""

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SMALL_BODY = json.dumps({
    "id": 4711, "name": "Grace Hopper", "email": "grace.hopper@example.test", "plan": "team",
    "active": True, "created_at": "2025-03-14T08:00:00Z", "roles": ["admin", "billing"],
    "settings": {"theme": "dark", "locale": "en-US", "tz": "Europe/Berlin", "beta": False},
    "score": 982, "tags": ["early-adopter", "speaker", "mentor"],
})
LARGE_BODY = json.dumps({"items": [{"id": i, "title": f"product {i}", "price_cents": 1000 + i,
                                    "desc": "lorem ipsum dolor sit amet " * 3} for i in range(120)]})[:16384]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


class Proc:
    """A child process stopped by PID when done."""

    def __init__(self, argv, log):
        self.log = open(log, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode


def proc_tree(pid):
    out = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for k in kids:
            out.extend(proc_tree(int(k)))
    except OSError:
        pass
    return out


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def rss_mib(pids, field="VmRSS"):
    """Resident memory of these processes (VmRSS now, or VmHWM: the peak since each started)."""
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class CpuCap:
    """Caps the proxy under test at `pct` % of one core (see the module docs for the modes)."""

    def __init__(self, pct, cpu):
        self.pct, self.cpu, self.dir, self.busy = pct, cpu, None, None
        self.mode = "off"
        if not pct:
            return
        name = f"tapedeck-bench-{os.getpid()}"
        for setup in (self._v2, self._v1):
            try:
                self.dir = setup(name)
                return
            except OSError:
                self.dir = None
        # No cgroup we may create: share the proxy's core with a busy loop of equal weight.
        self.busy = subprocess.Popen(pin(cpu) + [sys.executable, "-c", "while True: pass"],
                                     stdin=subprocess.DEVNULL)
        self.mode = f"CPU {cpu} shared with a busy loop (about 50 % of the core; cgroups not writable)"

    @staticmethod
    def _mounts(fstype):
        out = []
        with open("/proc/self/mounts") as f:
            for line in f:
                dev, mnt, typ, opts = line.split()[:4]
                if typ == fstype:
                    out.append((mnt, opts.split(",")))
        return out

    def _v2(self, name):
        for mnt, _ in self._mounts("cgroup2"):
            try:
                controllers = open(os.path.join(mnt, "cgroup.controllers")).read().split()
            except OSError:
                continue
            if "cpu" not in controllers:
                continue
            with open(os.path.join(mnt, "cgroup.subtree_control"), "w") as f:
                f.write("+cpu")
            d = os.path.join(mnt, name)
            os.mkdir(d)
            try:
                with open(os.path.join(d, "cpu.max"), "w") as f:
                    f.write(f"{self.pct * 1000} 100000")
            except OSError:
                os.rmdir(d)
                raise
            self.mode = f"cgroup v2 cpu.max = {self.pct} % of one core"
            return d
        raise OSError("no cgroup2 mount with the cpu controller")

    def _v1(self, name):
        for mnt, opts in self._mounts("cgroup"):
            if "cpu" not in opts:
                continue
            d = os.path.join(mnt, name)
            os.mkdir(d)
            try:
                with open(os.path.join(d, "cpu.cfs_period_us"), "w") as f:
                    f.write("100000")
                with open(os.path.join(d, "cpu.cfs_quota_us"), "w") as f:
                    f.write(str(self.pct * 1000))
            except OSError:
                os.rmdir(d)
                raise
            self.mode = f"cgroup v1 cpu.cfs_quota_us = {self.pct} % of one core"
            return d
        raise OSError("no cgroup v1 cpu mount")

    def wrap(self, argv):
        """`argv` started inside the cgroup (its children follow), or unchanged."""
        if self.dir is None:
            return argv
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.dir] + argv

    def close(self):
        if self.busy is not None:
            self.busy.kill()
            self.busy.wait()
        if self.dir is not None:
            for _ in range(50):
                try:
                    os.rmdir(self.dir)
                    break
                except OSError:
                    time.sleep(0.1)


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        lat[pct] = float(val) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    done = re.search(r"(\d+) requests in ", text)
    return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "requests": int(done.group(1)) if done else None,
            "non2xx": int(errors.group(1)) if errors else 0}


def wrk(url, conns, seconds, cpu, close=False):
    """wrk; with `close`, every request on a new connection (`Connection: close`)."""
    argv = pin(cpu) + ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", url]
    if close:
        argv[-1:-1] = ["-H", "Connection: close"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(out.stdout)


NGINX_UPSTREAM = """
worker_processes 1;
pid {dir}/up.pid;
error_log {dir}/up-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /small {{ default_type application/json; return 200 '{small}'; }}
    location = /large {{ default_type application/json; root {dir}; try_files /large.json =404; }}
  }}
}}
"""

NGINX_PROXY = """
worker_processes {workers};
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{up}; keepalive {keepalive}; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }}
  }}
}}
"""


def start_nginx(conf_text, name, tmp, cpu, cap=None):
    conf = os.path.join(tmp, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    argv = pin(cpu) + ["nginx", "-c", conf, "-g", "daemon off;"]
    return Proc(cap.wrap(argv) if cap else argv, os.path.join(tmp, f"{name}.log"))


def nginx_proxy_conf(tmp, port, up, conns):
    # nginx reconnects upstream when its keepalive pool is smaller than the connection count
    # (0.71x at keepalive 32 with 64 connections): keep at least one idle connection per client.
    return NGINX_PROXY.format(dir=tmp, port=port, up=up, workers=1, keepalive=max(256, conns))


def record_flags(binary):
    """The `tapedeck record` flags this binary knows (the harness runs older and newer builds)."""
    out = subprocess.run([binary, "record", "--help"], capture_output=True, text=True, timeout=60)
    return set(re.findall(r"--[a-z][a-z0-9-]+", out.stdout))


def metric_sum(admin_port, prefix):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    total = 0.0
    for line in body.splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(" ", 1)[1])
    return total


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


# --------------------------------------------------------------------------------------------
# proxy


def proxy_kinds(args):
    """The targets of the proxy section: `direct` (wrk to the upstream), `nginx` (nginx as the
    proxy), then tapedeck pass-through and recording per engine (`--engine` when the binary has
    it), and `record-seal-now` (sealing at once at normal priority) with --seal-compare."""
    flags = record_flags(args.bin)
    engines = args.engines.split(",") if args.engines else (
        ["hyper", "pingora"] if "--engine" in flags else ["default"])
    kinds = ["direct", "nginx"]
    for e in engines:
        suffix = "" if e == "default" else f" {e}"
        kinds += [f"passthrough{suffix}", f"record{suffix}"]
        if args.seal_compare and "--seal-backlog" in flags:
            kinds.append(f"record-seal-now{suffix}")
    if args.targets:
        # nginx stays: it is what every ratio is taken against.
        want = args.targets.split(",")
        kinds = [k for k in kinds if k == "nginx" or k in want or k.split(" ")[0] in want]
    return kinds


def bench_proxy(args, tmp, lines):
    up_port = free_port()
    with open(os.path.join(tmp, "large.json"), "w") as f:
        f.write(LARGE_BODY)
    # nginx started as root serves files as its unprivileged worker user: make the file readable.
    os.chmod(tmp, 0o755)
    os.chmod(os.path.join(tmp, "large.json"), 0o644)
    upstream = start_nginx(NGINX_UPSTREAM.format(dir=tmp, port=up_port, small=SMALL_BODY.replace("'", "")),
                           "upstream", tmp, 1)
    assert wait_port(up_port), "upstream nginx did not start"
    kinds = proxy_kinds(args)
    cap = CpuCap(args.cpu_cap, 0)
    results = {}
    try:
        for path in args.paths:
            for conns in args.conns:
                rows = {k: [] for k in kinds}
                for rep in range(args.reps):
                    for kind in rows:
                        r = run_proxy_case(args, tmp, kind, up_port, path, conns, rep, cap)
                        if r.get("non2xx"):
                            raise RuntimeError(f"{kind} {path}: {r['non2xx']} responses were not 2xx: "
                                               "the comparison would measure errors")
                        rows[kind].append(r)
                        print(f"proxy {path} c{conns} rep{rep} {kind}: {r}", flush=True)
                results[(path, conns)] = rows
    finally:
        cap.close()
        upstream.stop()

    lines.append("## Proxy: wrk through each proxy to an nginx upstream\n")
    lines.append(f"wrk `-t1 -cC -d{args.seconds}s --latency`; proxy under test pinned to CPU 0 with "
                 "one worker thread (tapedeck `--threads 1`, nginx `worker_processes 1`, upstream "
                 "keepalive ≥ connections); wrk and the upstream nginx pinned to CPU 1. "
                 f"CPU cap on the proxy under test: {cap.mode}. Medians of "
                 f"{args.reps} interleaved repetitions. `record` records every exchange with bodies; "
                 "`passthrough` is `tapedeck record --no-record`; `record-seal-now` is `record` with "
                 "`--seal-backlog 0` (sealing at normal priority as segments close). A body followed by "
                 "`close`: every request on a new client connection (wrk `-H 'Connection: close'`). CPU µs/req: "
                 "utime + stime of all the proxy's threads and processes over the run / requests "
                 "completed; peak RSS: VmHWM.\n")
    lines.append("| body | conns | target | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | dropped "
                 "| req/s vs nginx proxy | CPU/req vs nginx proxy |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for (path, conns), rows in results.items():
        nginx_rps = median([r["rps"] for r in rows["nginx"]])
        nginx_cpu = median([r.get("cpu_us_per_req") for r in rows["nginx"]])
        for kind, rs in rows.items():
            rps = median([r["rps"] for r in rs])
            cpu = median([r.get("cpu_us_per_req") for r in rs])
            lines.append(
                f"| {path} | {conns} | {kind} | {fmt(rps)} | {fmt(median([r['p50_ms'] for r in rs]), 2)} "
                f"| {fmt(median([r['p99_ms'] for r in rs]), 2)} | {fmt(cpu, 1)} "
                f"| {fmt(median([r.get('rss_peak_mib') for r in rs]), 1)} "
                f"| {fmt(median([r.get('dropped') for r in rs]))} "
                f"| {fmt(ratio(rps, nginx_rps), 2) if kind != 'direct' else '—'} "
                f"| {fmt(ratio(cpu, nginx_cpu), 2) if kind != 'direct' else '—'} |")
    lines.append("")
    return results


def run_proxy_case(args, tmp, kind, up_port, case, conns, rep, cap):
    # "/small close": every request on a new client connection.
    path, _, mode = case.partition(" ")
    close = mode == "close"
    if kind == "direct":
        r = wrk(f"http://127.0.0.1:{up_port}{path}", conns, args.seconds, 1, close)
        return r
    port = free_port()
    admin = free_port()
    tape = None
    stop_timeout = 30
    if kind == "nginx":
        proc = start_nginx(nginx_proxy_conf(tmp, port, up_port, conns), f"proxy-{rep}", tmp, 0, cap)
    else:
        base, _, engine = kind.partition(" ")
        argv = pin(0) + [args.bin, "record", "--listen", f"127.0.0.1:{port}",
                         "--upstream", f"http://127.0.0.1:{up_port}",
                         "--threads", "1", "--admin", f"127.0.0.1:{admin}"]
        if engine:
            argv += ["--engine", engine]
        if base == "passthrough":
            argv.append("--no-record")
        else:
            tape = tempfile.mkdtemp(prefix="tape-", dir=tmp)
            argv += ["--tape", tape]
            if base == "record-seal-now":
                argv += ["--seal-backlog", "0"]
            # Closing seals what is left of the spool (seconds for 16 KB bodies on a capped core).
            stop_timeout = 300
        proc = Proc(cap.wrap(argv), os.path.join(tmp, f"{kind.replace(' ', '-')}-{rep}.log"))
    try:
        assert wait_port(port), f"{kind} did not start"
        time.sleep(0.3)
        pids = proc_tree(proc.p.pid)
        cpu0 = cpu_seconds(pids)
        r = wrk(f"http://127.0.0.1:{port}{path}", conns, args.seconds, 1, close)
        pids = proc_tree(proc.p.pid)
        r["cpu_s"] = cpu_seconds(pids) - cpu0
        if r.get("requests"):
            r["cpu_us_per_req"] = r["cpu_s"] * 1e6 / r["requests"]
        r["rss_peak_mib"] = rss_mib(pids, "VmHWM")
        if kind != "nginx":
            r["dropped"] = metric_sum(admin, "tapedeck_dropped_total")
    finally:
        code = proc.stop(timeout=stop_timeout)
        if tape:
            shutil.rmtree(tape, ignore_errors=True)
    if kind != "nginx" and code not in (0, None):
        raise RuntimeError(f"{kind} exited with {code}; see {tmp}")
    return r


# --------------------------------------------------------------------------------------------
# added latency at half of nginx's max rate


def replay_json(args, argv, timeout, cpu=None):
    out = subprocess.run(pin(cpu) + [args.bin] + argv + ["--json", "--quiet"], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"tapedeck {' '.join(argv)} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def record_tape(args, tmp, up_port, path, seconds):
    """A real recorded tape: wrk through `tapedeck record` for a few seconds."""
    port = free_port()
    tape = tempfile.mkdtemp(prefix="rec-", dir=tmp)
    proc = Proc([args.bin, "record", "--listen", f"127.0.0.1:{port}", "--upstream",
                 f"http://127.0.0.1:{up_port}", "--tape", tape, "--admin", "off"],
                os.path.join(tmp, "rec.log"))
    try:
        assert wait_port(port)
        wrk(f"http://127.0.0.1:{port}{path}", 16, seconds, None)
    finally:
        assert proc.stop() == 0, "recorder did not exit cleanly"
    return tape


def bench_latency_at_half_rate(args, tmp, lines, proxy_results):
    """The proxies at an equal load below every proxy's ceiling: half of nginx-as-proxy's max
    rate, sent open loop by `tapedeck replay --rate` (latency from the scheduled send time, so
    queueing shows) straight to the upstream, through nginx, and through `tapedeck record`
    passing through and recording. Per target: p99 and what the proxy adds to the direct p99,
    and the proxy's CPU µs per request at that rate (what a sidecar costs at a given traffic,
    as opposed to the capped rows' ceiling)."""
    key = ("/small", args.conns[0])
    if key not in proxy_results:
        return
    rows = proxy_results[key]
    rate = int(median([r["rps"] for r in rows["nginx"]]) / 2)
    count = rate * args.seconds
    up_port = free_port()
    upstream = start_nginx(NGINX_UPSTREAM.format(dir=tmp, port=up_port, small=SMALL_BODY.replace("'", "")),
                           "upstream2", tmp, 1)
    assert wait_port(up_port)
    kinds = ("direct", "nginx", "pass-through", "record")
    res = {k: {"p99": [], "cpu": [], "life": [], "achieved": []} for k in kinds}
    try:
        tape = record_tape(args, tmp, up_port, "/small", 2)
        for rep in range(args.reps):
            for kind in kinds:
                port, proc = None, None
                if kind == "direct":
                    port = up_port
                elif kind == "nginx":
                    port = free_port()
                    proc = start_nginx(nginx_proxy_conf(tmp, port, up_port, 64), f"half-{rep}", tmp, 0)
                else:
                    port = free_port()
                    t = tempfile.mkdtemp(prefix="half-", dir=tmp)
                    mode = ["--no-record"] if kind == "pass-through" else ["--tape", t]
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    proc = Proc(pin(0) + [args.bin, "record", "--listen", f"127.0.0.1:{port}", "--upstream",
                                          f"http://127.0.0.1:{up_port}", "--threads", "1", "--admin", "off"]
                                + mode, os.path.join(tmp, f"half-rec-{rep}.log"))
                replay_cpu = None
                try:
                    assert wait_port(port)
                    out = tempfile.mkdtemp(prefix="half-out-", dir=tmp)
                    pids = proc_tree(proc.p.pid) if proc else []
                    cpu0 = cpu_seconds(pids)
                    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    s = replay_json(args, ["replay", "--tape", tape, "--target", f"t=http://127.0.0.1:{port}",
                                           "--out", out, "--rate", str(rate), "--limit", str(count),
                                           "--allow-same-host"], args.seconds * 4 + 60, cpu=1)
                    cpu = (cpu_seconds(pids) - cpu0) / count * 1e6 if proc else None
                    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    replay_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                    t0 = s["targets"][0]
                    if t0["errors"]:
                        raise RuntimeError(f"half-rate {kind}: {t0['errors']} error results")
                    res[kind]["p99"].append(t0["latency_us"]["p99"] / 1000)
                    res[kind]["achieved"].append(s["pacing"]["achieved_rate"] / rate)
                    if cpu is not None:
                        res[kind]["cpu"].append(cpu)
                    print(f"half-rate {rate}/s rep{rep} {kind}: p99 {t0['latency_us']['p99'] / 1000:.2f} ms, "
                          f"proxy CPU {fmt(cpu, 1)} us/req", flush=True)
                finally:
                    if proc:
                        code = proc.stop()
                        if kind == "record" and replay_cpu is not None:
                            # The recorder's whole life (start-up, the run, sealing its spool at
                            # exit): RUSAGE_CHILDREN grows by the children waited for since
                            # `before`: the replay (measured alone above) and the recorder.
                            after = resource.getrusage(resource.RUSAGE_CHILDREN)
                            total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                            res[kind]["life"].append((total - replay_cpu) / count * 1e6)
                        assert code == 0, f"half-rate {kind}: the proxy exited with {code}"
    finally:
        upstream.stop()
    med = {k: {m: median(v) if v else None for m, v in r.items()} for k, r in res.items()}
    direct = med["direct"]["p99"]
    nginx_cpu = med["nginx"]["cpu"]
    lines.append(f"## The proxies at an equal load: half of nginx's max rate ({rate:,} req/s, open loop)\n")
    lines.append(f"Load: `tapedeck replay --rate {rate} --limit {count:,}` of a recorded tape of `GET /small` "
                 "(latency measured from the scheduled send time, so queueing shows), pinned to CPU 1 with the "
                 "upstream; each proxy alone on CPU 0, uncapped, one worker thread. The load generator's own "
                 f"lateness is in the direct row. Medians of {args.reps}. Proxy CPU: user + system time of every "
                 "thread of the proxy during the run (/proc/PID/stat), per request.\n")
    lines.append("| target | achieved / target rate | p99 ms | added p99 vs direct, ms | proxy CPU µs / request "
                 "| CPU vs nginx |")
    lines.append("|---|---|---|---|---|---|")
    for kind in kinds:
        m = med[kind]
        added = None if m["p99"] is None or direct is None else m["p99"] - direct
        lines.append(f"| {kind} | {fmt(m['achieved'], 4)} | {fmt(m['p99'], 2)} | "
                     f"{fmt(added, 2) if kind != 'direct' else '—'} | {fmt(m['cpu'], 1) if kind != 'direct' else '—'} | "
                     f"{fmt(ratio(m['cpu'], nginx_cpu), 2) if kind != 'direct' else '—'} |")
    if med["record"]["life"] is not None:
        lines.append(f"\nRecording, with sealing: the recorder's whole life (start-up, the run, and sealing its "
                     f"spool into Parquet at exit: a run this short closes no spool segment, so nothing is sealed "
                     f"while it runs) is {fmt(med['record']['life'], 1)} µs of CPU per request "
                     f"({fmt(ratio(med['record']['life'], nginx_cpu), 2)}× nginx's CPU during the run).")
    lines.append("")


# --------------------------------------------------------------------------------------------
# replay


NGINX_REPLAY = """
worker_processes 1;
pid {dir}/replay-up.pid;
error_log {dir}/replay-up-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  http2_max_requests 100000000;
  http2_max_concurrent_streams 1024;
  ssl_certificate {dir}/h2.pem;
  ssl_certificate_key {dir}/h2.key;
  server {{
    listen 127.0.0.1:{h1} reuseport backlog=4096;
    listen 127.0.0.1:{h2c} http2 reuseport backlog=4096;
    listen 127.0.0.1:{h2tls} ssl http2 reuseport backlog=4096;
    location / {{ default_type application/json; return 200 '{small}'; }}
  }}
}}
"""


def timed(argv, timeout):
    """Runs argv; returns (CompletedProcess, CPU seconds it used: user + system, children incl.)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def replay_run(args, argv, timeout, cpu):
    """`tapedeck replay ARGV --json --quiet` pinned to `cpu`: (summary, CPU µs per origin)."""
    out, cpu_s = timed(pin(cpu) + [args.bin, "replay"] + argv + ["--json", "--quiet"], timeout)
    if out.returncode != 0:
        raise RuntimeError(f"tapedeck replay {' '.join(argv)} failed: {out.stderr[-2000:]}")
    s = json.loads(out.stdout)
    errors = sum(t["errors"] for t in s["targets"])
    if errors:
        raise RuntimeError(f"tapedeck replay {' '.join(argv)}: {errors} error results; the run would measure errors")
    return s, cpu_s / max(s["origins"], 1) * 1e6


def h2load(url, conns, streams, seconds, cpu):
    """h2load pinned to `cpu`: (req/s, CPU µs per request)."""
    out, cpu_s = timed(pin(cpu) + ["h2load", f"-c{conns}", f"-m{streams}", f"-D{seconds}", url], seconds + 60)
    m = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out.stdout)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out.stdout)
    if not m or not done or done.group(1) != done.group(2):
        raise RuntimeError(f"h2load {url} failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    return float(m.group(1)), cpu_s / max(int(done.group(1)), 1) * 1e6


def self_signed(tmp):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", os.path.join(tmp, "h2.key"), "-out", os.path.join(tmp, "h2.pem")],
                   check=True, capture_output=True, timeout=60)


def bench_replay(args, tmp, lines):
    """Replay against nginx, side by side with wrk (HTTP/1.1) and h2load (HTTP/2): closed loop
    throughput and CPU per request, and open-loop accuracy. Load generators on CPU 0, nginx on
    CPU 1. Every replay writes every result to a tape; any error result fails the run."""
    ports = {k: free_port() for k in ("h1", "h2c", "h2tls")}
    self_signed(tmp)
    upstream = start_nginx(NGINX_REPLAY.format(dir=tmp, small=SMALL_BODY.replace("'", ""), **ports),
                           "replay-up", tmp, 1)
    assert all(wait_port(p) for p in ports.values()), "replay upstream nginx did not start"
    h1 = f"http://127.0.0.1:{ports['h1']}"
    conns, h2conns, streams = 64, 4, 16
    try:
        # A recorded tape of the request wrk sends, long enough for a closed-loop run.
        tape = record_tape(args, tmp, ports["h1"], "/small", args.seconds)
        rows = {k: [] for k in ("wrk", "replay", "h2load", "replay-h2c", "h2load-tls", "replay-h2tls")}
        for rep in range(args.reps):
            out, cpu_s = timed(pin(0) + ["wrk", "-t1", f"-c{conns}", f"-d{args.seconds}s", f"{h1}/small"],
                               args.seconds + 60)
            w = parse_wrk(out.stdout)
            n = re.search(r"(\d+) requests in", out.stdout)
            rows["wrk"].append((w["rps"], cpu_s / max(int(n.group(1)) if n else 1, 1) * 1e6))
            for key, target, extra in (
                    ("replay", f"t={h1}", ["--concurrency", str(conns)]),
                    ("replay-h2c", f"t=h2c://127.0.0.1:{ports['h2c']}",
                     ["--concurrency", str(h2conns * streams), "--connections", str(h2conns)]),
                    ("replay-h2tls", f"t=https://127.0.0.1:{ports['h2tls']}",
                     ["--concurrency", str(h2conns * streams), "--connections", str(h2conns), "--insecure"])):
                argv = ["--tape", tape, "--out", tempfile.mkdtemp(prefix="max-", dir=tmp), "--max",
                        "--allow-same-host", "--target", target] + extra
                s, cpu_us = replay_run(args, argv, 600, 0)
                rows[key].append((s["pacing"]["achieved_rate"], cpu_us))
            rows["h2load"].append(h2load(f"http://127.0.0.1:{ports['h2c']}/small", h2conns, streams, args.seconds, 0))
            rows["h2load-tls"].append(h2load(f"https://127.0.0.1:{ports['h2tls']}/small", h2conns, streams,
                                             args.seconds, 0))
            print(f"replay max rep{rep}: " + ", ".join(f"{k} {v[-1][0]:.0f}/s {v[-1][1]:.1f}us" for k, v in rows.items()),
                  flush=True)
        med = {k: (median([r for r, _ in v]), median([c for _, c in v])) for k, v in rows.items()}
        lines.append("## Replay: closed loop against nginx\n")
        lines.append(f"Load generator pinned to CPU 0, nginx (1 worker) to CPU 1; medians of {args.reps} interleaved "
                     f"repetitions. HTTP/1.1: `wrk -t1 -c{conns}` vs `tapedeck replay --max --concurrency {conns}` of a "
                     f"recorded tape of the same request. HTTP/2: `h2load -c{h2conns} -m{streams}` vs `tapedeck replay "
                     f"--max --concurrency {h2conns * streams} --connections {h2conns}` (h2c, and TLS with ALPN h2). "
                     "Every replay writes every result to a tape. CPU µs per request: user + system time of the load "
                     "generator's process (replay: all its threads: reading the tape, sending, writing results).\n")
        lines.append("| protocol | load generator | req/s | CPU µs / request | ratio |")
        lines.append("|---|---|---|---|---|")
        for proto, ref, ours in (("HTTP/1.1", "wrk", "replay"), ("h2c", "h2load", "replay-h2c"),
                                 ("h2 (TLS)", "h2load-tls", "replay-h2tls")):
            lines.append(f"| {proto} | {ref.split('-')[0]} | {fmt(med[ref][0])} | {fmt(med[ref][1], 1)} | — |")
            lines.append(f"| {proto} | tapedeck replay --max | {fmt(med[ours][0])} | {fmt(med[ours][1], 1)} "
                         f"| {fmt(ratio(med[ours][0], med[ref][0]), 2)} |")
        lines.append("")
    finally:
        upstream.stop()
    bench_open_loop(args, tmp, lines)


def bench_open_loop(args, tmp, lines):
    """Open-loop accuracy: `--rate R` for `--seconds`, each repetition reported (the goal holds
    in every run, not in the median), on two tapes: a recorded tape of the request wrk sends
    (`GET /small`, as in the closed-loop rows) and synthetic API traffic (13 request headers,
    varied paths: more work per request)."""
    port = free_port()
    conf = NGINX_REPLAY.format(dir=tmp, small=SMALL_BODY.replace("'", ""), h1=port, h2c=free_port(),
                               h2tls=free_port()).replace("replay-up", "open-up")
    upstream = start_nginx(conf, "open-up", tmp, 1)
    assert wait_port(port)
    try:
        count = max(args.rates) * args.seconds * 2
        # wrk through `tapedeck record` makes ≥ 25k exchanges a second on this machine kind.
        recorded = record_tape(args, tmp, port, "/small", max(2, count // 25_000 + 1))
        # Synthetic traffic (every path answers 200 here).
        synth = os.path.join(tmp, "open-tape")
        subprocess.run([args.bin, "synth", "--out", synth, "--count", str(count)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
        lines.append("## Replay: open-loop accuracy\n")
        lines.append(f"`tapedeck replay --rate R --limit R×{args.seconds}` against nginx, replay on CPU 0, nginx on "
                     "CPU 1, of two tapes: `recorded` is a recorded tape of the request wrk sends (`GET /small`, the "
                     "closed-loop rows' tape); `synth` is `tapedeck synth` API traffic (GETs with 13 request headers "
                     "and varied paths; writes skipped), more work per request. One row per run. Lateness: how late "
                     "each request left versus its schedule.\n")
        lines.append("| tape | target rate | run | achieved rate | achieved/target | lateness p50 µs | p99 µs "
                     "| max µs | CPU µs / request |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for name, tape, extra in (("recorded", recorded, ["--allow-same-host"]), ("synth", synth, [])):
            for rate in args.rates:
                for rep in range(args.reps):
                    out = tempfile.mkdtemp(prefix="rate-", dir=tmp)
                    s, cpu_us = replay_run(args, ["--tape", tape, "--target", f"t=http://127.0.0.1:{port}",
                                                  "--out", out, "--rate", str(rate), "--limit",
                                                  str(rate * args.seconds)] + extra,
                                           args.seconds * 4 + 120, 0)
                    shutil.rmtree(out, ignore_errors=True)
                    p = s["pacing"]
                    print(f"rate {rate} {name} rep{rep}: {p['achieved_rate']:.1f}/s "
                          f"lateness p99 {p['lateness_us']['p99']}us", flush=True)
                    lines.append(f"| {name} | {rate:,} | {rep + 1} | {fmt(p['achieved_rate'], 1)} "
                                 f"| {fmt(ratio(p['achieved_rate'], rate), 4)} | {fmt(p['lateness_us']['p50'])} "
                                 f"| {fmt(p['lateness_us']['p99'])} | {fmt(p['lateness_us']['max'])} "
                                 f"| {fmt(cpu_us, 1)} |")
        lines.append("")
    finally:
        upstream.stop()


GROWTH_RATE, GROWTH_REQUESTS = 2000, 8000


def open_connections(port, n, hold, ready):
    """Opens `n` keep-alive connections to `port`, one a millisecond, each sending `GET /small`
    once; appends the number answered to `ready`, then holds them `hold` seconds."""
    socks, t0 = [], time.monotonic()
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /small HTTP/1.1\r\nHost: growth\r\n\r\n")
            socks.append(s)
            delay = t0 + (i + 1) / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        answered = 0
        for s in socks:
            try:
                answered += s.recv(4096).startswith(b"HTTP/1.1 200")
            except OSError:
                pass
        ready.append(answered)
        time.sleep(hold)
    finally:
        for s in socks:
            s.close()


def bench_conn_growth(args, tmp, lines):
    """The recorder while its connection count grows: a paced probe (`replay --rate`) through a
    one-worker recorder (`--no-record`, CPU 0) while another client opens connections to it at
    1/ms. Each time the process's descriptor table fills, the kernel doubles it and the thread
    that opened the descriptor waits for an RCU grace period: every connection on that worker
    waits too. `--base-bin` runs an earlier build in the same run (interleaved)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The recorder holds two descriptors per client connection (the client's, its upstream's).
    conns = min(300 if args.smoke else 1500, (hard - 200) // 2)
    up_port = free_port()
    upstream = start_nginx(NGINX_UPSTREAM.format(dir=tmp, port=up_port, small=SMALL_BODY.replace("'", "")),
                           "growth-up", tmp, 1)
    assert wait_port(up_port)
    bins = [("this build", args.bin)] + ([("base build", args.base_bin)] if args.base_bin else [])
    rows = []
    try:
        tape = record_tape(args, tmp, up_port, "/small", 1)
        for rep in range(args.reps):
            for label, binary in bins:
                for n in (0, conns):
                    port = free_port()
                    rec = Proc(pin(0) + [binary, "record", "--listen", f"127.0.0.1:{port}", "--upstream",
                                         f"http://127.0.0.1:{up_port}", "--threads", "1", "--no-record",
                                         "--admin", "off"], os.path.join(tmp, "growth-rec.log"))
                    try:
                        assert wait_port(port), "recorder did not listen"
                        ready = []
                        opener = threading.Thread(target=open_connections, args=(port, n, 4, ready), daemon=True)
                        opener.start()
                        out = tempfile.mkdtemp(prefix="growth-", dir=tmp)
                        # The probe is always this build's replay, whichever recorder is measured.
                        s, _ = replay_run(args, ["--tape", tape, "--target", f"t=http://127.0.0.1:{port}",
                                                 "--out", out, "--rate", str(GROWTH_RATE), "--limit",
                                                 str(GROWTH_REQUESTS), "--allow-same-host"], 120, 1)
                        shutil.rmtree(out, ignore_errors=True)
                        opener.join(timeout=30)
                    finally:
                        assert rec.stop() == 0, "recorder did not exit cleanly"
                    lat = s["targets"][0]["latency_us"]
                    answered = ready[0] if ready else 0
                    print(f"growth {label} {n} conns rep{rep}: p99 {lat['p99']}us max {lat['max']}us", flush=True)
                    rows.append((label, n, rep + 1, answered, lat))
    finally:
        upstream.stop()
    lines.append("## Record: latency while connections arrive\n")
    lines.append(f"`tapedeck record --threads 1 --no-record` on CPU 0 in front of nginx (CPU 1); the probe is "
                 f"`tapedeck replay --rate {GROWTH_RATE} --limit {GROWTH_REQUESTS}` of a recorded `GET /small` on CPU 1, "
                 f"while another client opens N keep-alive connections to the recorder, one a millisecond, each "
                 f"sending one request. Probe latency in µs; one row per run.\n")
    lines.append("| build | new connections | run | answered | p50 | p99 | p99.9 | max |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for label, n, rep, answered, lat in rows:
        lines.append(f"| {label} | {n:,} | {rep} | {answered:,} | {fmt(lat['p50'])} | {fmt(lat['p99'])} "
                     f"| {fmt(lat['p999'])} | {fmt(lat['max'])} |")
    lines.append("")


def bench_replay_memory(args, tmp, lines):
    """Peak RSS of `tapedeck replay` over a large synthetic tape (results written)."""
    count = args.big_tape
    tape = os.path.join(tmp, "big")
    subprocess.run([args.bin, "synth", "--out", tape, "--count", str(count)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    up_port = free_port()
    upstream = start_nginx(NGINX_UPSTREAM.format(dir=tmp, port=up_port, small=SMALL_BODY.replace("'", "")),
                           "upstream4", tmp, 1)
    assert wait_port(up_port)
    try:
        out = tempfile.mkdtemp(prefix="big-out-", dir=tmp)
        t0 = time.time()
        p = subprocess.Popen(["/usr/bin/time", "-v", args.bin, "replay", "--tape", tape, "--target",
                              f"t=http://127.0.0.1:{up_port}", "--out", out, "--max", "--concurrency", "64",
                              "--quiet", "--allow-writes", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        summary_text, err = p.communicate(timeout=7200)
        if p.returncode != 0:
            raise RuntimeError(f"replay of the large tape failed ({p.returncode}): {err[-2000:]}")
        written = json.loads(summary_text)["results_written"]
        peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        peak_mib = int(peak.group(1)) / 1024 if peak else None
        lines.append("## Replay: memory on a large tape\n")
        lines.append(f"`tapedeck replay --max --concurrency 64` of a {count:,}-exchange synthetic tape against nginx, "
                     f"writing all results; peak RSS from `/usr/bin/time -v`; took {time.time() - t0:.0f} s.\n")
        lines.append(f"| exchanges | results written | peak RSS MiB |\n|---|---|---|\n"
                     f"| {count:,} | {written:,} | {fmt(peak_mib, 1)} |\n")
    finally:
        upstream.stop()


# --------------------------------------------------------------------------------------------
# mock: recorded dependency answers


MOCK_ANSWERS = 1000

NGINX_STATIC = """
worker_processes 1;
pid {dir}/static.pid;
error_log {dir}/static-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
"""

# Each request asks for one of the recorded prices; with `traced`, inside that price's trace.
MOCK_LUA = """
local n = 0
request = function()
  n = n % {count} + 1
  local headers = {{}}
  if {traced} then
    headers["traceparent"] = string.format("00-%032x-00f067aa0ba902b7-01", n)
  end
  return wrk.format("GET", "/price/" .. n .. "?cur=eur", headers)
end
"""


def price_body(i):
    return json.dumps({"sku": i, "price_cents": 1000 + i, "currency": "EUR", "valid_until": "2026-01-01T00:00:00Z"},
                      separators=(",", ":"))


def mock_tape(args, tmp):
    """A dependency tape of MOCK_ANSWERS small JSON answers, each in its own trace (via a HAR)."""
    entries = []
    for i in range(1, MOCK_ANSWERS + 1):
        body = price_body(i)
        entries.append({
            "startedDateTime": f"2026-01-01T00:00:{i // 1000:02d}.{i % 1000:03d}Z", "time": 1.0,
            "request": {"method": "GET", "url": f"http://pricing.internal/price/{i}?cur=eur",
                        "httpVersion": "HTTP/1.1", "headers": [], "queryString": [], "cookies": [],
                        "headersSize": -1, "bodySize": 0},
            "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                         "headers": [{"name": "content-type", "value": "application/json"}], "cookies": [],
                         "content": {"size": len(body), "mimeType": "application/json", "text": body},
                         "redirectURL": "", "headersSize": -1, "bodySize": len(body)},
            "cache": {}, "timings": {"send": 0, "wait": 1, "receive": 0},
            "_tapedeck": {"trace_id": f"{i:032x}", "source": "pricing"},
        })
    har = os.path.join(tmp, "pricing.har")
    with open(har, "w") as f:
        json.dump({"log": {"version": "1.2", "creator": {"name": "bench", "version": "1"}, "entries": entries}}, f)
    tape = os.path.join(tmp, "pricing-tape")
    subprocess.run([args.bin, "import-har", har, "--tape", tape], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return tape


def wrk_lua(url, conns, seconds, cpu, script):
    argv = pin(cpu) + ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", script, url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(out.stdout)


def bench_mock(args, tmp, lines):
    """`tapedeck mock` on one core (CPU 0, one worker) answering small recorded JSON, vs nginx
    returning one fixed body from the same core; wrk with a Lua script on CPU 1."""
    tape = mock_tape(args, tmp)
    scripts = {}
    for traced in (False, True):
        path = os.path.join(tmp, f"mock-{traced}.lua")
        with open(path, "w") as f:
            f.write(MOCK_LUA.format(count=MOCK_ANSWERS, traced="true" if traced else "false"))
        scripts[traced] = path
    cases = [("nginx (fixed body)", "nginx", True), ("mock, untraced", "mock", False),
             ("mock, traced", "mock", True), ("mock, traced, --out", "mock-out", True)]
    rows = {c[0]: [] for c in cases}
    for rep in range(args.reps):
        for label, kind, traced in cases:
            port = free_port()
            if kind == "nginx":
                proc = start_nginx(NGINX_STATIC.format(dir=tmp, port=port, body=price_body(1)), f"static-{rep}", tmp, 0)
            else:
                argv = pin(0) + [args.bin, "mock", "--tape", tape, "--listen", f"127.0.0.1:{port}", "--threads", "1"]
                if kind == "mock-out":
                    argv += ["--out", tempfile.mkdtemp(prefix="mock-out-", dir=tmp)]
                proc = Proc(argv, os.path.join(tmp, f"mock-{rep}-{len(rows[label])}.log"))
            try:
                assert wait_port(port, 60), f"{label} did not start"
                time.sleep(0.3)
                pids = proc_tree(proc.p.pid)
                cpu0 = cpu_seconds(pids)
                r = wrk_lua(f"http://127.0.0.1:{port}", 64, args.seconds, 1, scripts[traced])
                r["cpu_s"] = cpu_seconds(proc_tree(proc.p.pid)) - cpu0
            finally:
                code = proc.stop()
            if kind != "nginx" and code != 0:
                raise RuntimeError(f"{label}: tapedeck mock exited with {code}")
            if r.get("non2xx"):
                raise RuntimeError(f"{label}: {r['non2xx']} answers were not 2xx (misses?)")
            rows[label].append(r)
            print(f"mock rep{rep} {label}: {r}", flush=True)
    lines.append("## Mock: recorded dependency answers\n")
    lines.append(f"A dependency tape of {MOCK_ANSWERS:,} small JSON answers (≈ 90 B), each recorded in its own "
                 f"trace. `wrk -t1 -c64 -d{args.seconds}s` with a Lua script asking for each price in turn "
                 "(traced: with its `traceparent`) on CPU 1; the server on CPU 0: `tapedeck mock --threads 1`, "
                 f"or nginx `worker_processes 1` returning one fixed body. Medians of {args.reps} interleaved "
                 "repetitions.\n")
    lines.append("| server | req/s | p50 ms | p99 ms | server CPU s | server CPU µs / request | req/s vs nginx |")
    lines.append("|---|---|---|---|---|---|---|")
    nginx_rps = median([r["rps"] for r in rows[cases[0][0]]])
    for label, _, _ in cases:
        rs = rows[label]
        rps = median([r["rps"] for r in rs])
        # CPU time per answer does not depend on how much of the core others took meanwhile.
        per_req = median([r["cpu_s"] * 1e6 / (r["rps"] * args.seconds) if r["rps"] else None for r in rs])
        lines.append(f"| {label} | {fmt(rps)} | {fmt(median([r['p50_ms'] for r in rs]), 2)} "
                     f"| {fmt(median([r['p99_ms'] for r in rs]), 2)} | {fmt(median([r['cpu_s'] for r in rs]), 1)} "
                     f"| {fmt(per_req, 1)} "
                     f"| {fmt(ratio(rps, nginx_rps), 2) if label != cases[0][0] else '—'} |")
    lines.append("")


@contextlib.contextmanager
def in_memory(args):
    """Full runs measure copies of the binaries on tmpfs (/dev/shm): this machine kind keeps its
    page cache near 1 GiB, so a binary on disk has its code pages evicted between runs and read
    back during the next one's first moments (page faults in the sending or proxying thread;
    benches/RESULTS.md). Smoke runs use the binaries where they are."""
    shm = "/dev/shm"
    if args.smoke or not os.path.isdir(shm):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="tapedeck-bench-bin-", dir=shm) as d:
        for attr in ("bin", "base_bin"):
            path = getattr(args, attr)
            if path:
                copy = os.path.join(d, f"{attr}-{os.path.basename(path)}")
                shutil.copy2(path, copy)
                setattr(args, attr, copy)
        yield


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="a few seconds per section")
    ap.add_argument("--sections", default="proxy,half,growth,replay,memory,mock")
    ap.add_argument("--reps", type=int, help="override repetitions")
    ap.add_argument("--seconds", type=int, help="override seconds per load run")
    ap.add_argument("--paths", help="override proxy paths, e.g. /large; a path followed by ' close' "
                    "sends every request on a new connection, e.g. '/small close'")
    ap.add_argument("--conns", help="override proxy connection counts, e.g. 16,64")
    ap.add_argument("--cpu-cap", type=int, default=50,
                    help="cap the proxy under test at this %% of one core (0: no cap; default 50)")
    ap.add_argument("--engines", help="tapedeck engines to run, e.g. hyper,pingora "
                    "(default: both when the binary has --engine, else its only engine)")
    ap.add_argument("--targets", help="only these proxy targets (and nginx), e.g. record,passthrough")
    ap.add_argument("--seal-compare", action="store_true",
                    help="also record with --seal-backlog 0 (sealing at normal priority)")
    ap.add_argument("--rates", help="override open-loop rates, e.g. 10000,50000")
    ap.add_argument("--base-bin", help="growth section: also measure this (earlier) build's recorder")
    args = ap.parse_args()
    if args.smoke:
        args.seconds, args.reps, args.conns, args.paths, args.rates, args.big_tape = 2, 1, [16], ["/small"], [1000], 20_000
    else:
        args.seconds, args.reps, args.conns, args.paths, args.rates, args.big_tape = 10, 3, [64], ["/small", "/large", "/small close"], [1000, 10000, 50000], 5_000_000
    over = ap.parse_args()
    args.reps = over.reps or args.reps
    args.seconds = over.seconds or args.seconds
    if over.paths:
        args.paths = over.paths.split(",")
    if over.conns:
        args.conns = [int(c) for c in over.conns.split(",")]
    if over.rates:
        args.rates = [int(r) for r in over.rates.split(",")]
    sections = args.sections.split(",")
    lines = []
    with tempfile.TemporaryDirectory(prefix="tapedeck-bench-") as tmp, in_memory(args):
        proxy_results = {}
        if "proxy" in sections:
            proxy_results = bench_proxy(args, tmp, lines)
        if "half" in sections:
            bench_latency_at_half_rate(args, tmp, lines, proxy_results)
        if "growth" in sections:
            bench_conn_growth(args, tmp, lines)
        if "replay" in sections:
            bench_replay(args, tmp, lines)
        if "memory" in sections:
            bench_replay_memory(args, tmp, lines)
        if "mock" in sections:
            bench_mock(args, tmp, lines)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
