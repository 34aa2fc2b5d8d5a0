#!/usr/bin/env python3
"""How well does `tapedeck check --early-stop` judge? A/A false fails and A/B detection (issue 16).

On the built-in sample service (`tapedeck sample-api`, the demo's API), this records one tape of
the demo's traffic (`tapedeck demo --candidate-build good`), starts a baseline, a second baseline
instance (the noise target, `--secondary`) and one candidate per effect, each its own process on a
loopback port picked by the OS, and runs many checks:

- A/A: the candidate is a third v1 instance. Every fail is a false fail. The rate is reported with
  its exact (Clopper-Pearson) 95 % interval; with --early-stop it must be <= alpha.
- A/B: planted effects — the paginated route's latency x1.2, x2, x11 (p95 +20 %, +100 %,
  +1,000 %), `email` renamed in 2 % of the `GET /api/users/{id}` answers, and the seed's
  scenario: pages >= 2 of the paginated route 120 ms slower (the demo's v2-bad slowdown, about
  40x, without its two response changes). Detection rate
  (verdict fail), and the median requests per target and seconds to the verdict.

Each effect runs with and without --early-stop. Checks run `--jobs` at a time. Every process is
stopped by its PID. Usage:

    cargo build --release
    python3 benches/early_stop.py --bin target/release/tapedeck --aa-runs 200 --ab-runs 20

Writes a Markdown table to stdout (and --out FILE).
"""

import argparse
import concurrent.futures
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

EFFECTS = [
    # (name, sample-api flags)
    ("A/A (v1 vs v1)", ["--build", "v1"]),
    ("p95 +20 % (one route)", ["--build", "planted", "--pages-latency-factor", "1.2"]),
    ("p95 +100 % (one route)", ["--build", "planted", "--pages-latency-factor", "2.0"]),
    ("p95 +1,000 % (one route)", ["--build", "planted", "--pages-latency-factor", "11.0"]),
    ("response change in 2 % of one route", ["--build", "planted", "--users-change-rate", "0.02"]),
    ("seed: pages >= 2 +120 ms (v2-bad's slowdown alone)", ["--build", "planted", "--pages-delay-ms", "120"]),
]


class Server:
    """One `tapedeck sample-api` process; stopped by its PID."""

    def __init__(self, binary, flags):
        self.proc = subprocess.Popen([binary, "sample-api", *flags], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"sample-api {flags} did not start: {line!r}")
        self.url = line

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait()


def clopper_pearson(k, n, conf=0.95):
    """Exact binomial interval for k successes in n trials."""
    a = (1 - conf) / 2

    def cdf(x, p):  # P(X <= x)
        return sum(math.comb(n, i) * p**i * (1 - p)**(n - i) for i in range(x + 1))

    def solve(f):
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if f(mid):
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(lambda p: 1 - cdf(k - 1, p) < a)
    high = 1.0 if k == n else solve(lambda p: cdf(k, p) > a)
    return low, high


def check(binary, tape, base, sec, cand, work, early, limit, alpha):
    report = tempfile.mkdtemp(dir=work)
    args = [binary, "check", "--tape", tape, "--baseline", base, "--secondary", sec,
            "--candidate", cand, "--report", report, "--concurrency", "8", "--allow-same-host",
            "--json", "--quiet"]
    if limit:
        args += ["--limit", str(limit)]
    if early:
        args += ["--early-stop", "--alpha", str(alpha)]
    t0 = time.monotonic()
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    wall = time.monotonic() - t0
    shutil.rmtree(report, ignore_errors=True)
    if p.returncode not in (0, 1, 3):
        raise SystemExit(f"check failed ({p.returncode}): {p.stderr[-2000:]}")
    v = json.loads(p.stdout)
    if early:
        sent = max(v["requests_sent"].values())
        secs = v["time_to_verdict_ms"] / 1000
    else:
        sent = v["counts"]["targets"].get("candidate", 0)
        secs = wall
    return {"verdict": v["verdict"], "sent": sent, "secs": secs, "wall": wall,
            "stopped": v.get("stopped_early"), "seq": (v.get("sequential") or {}).get("decision")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/tapedeck")
    ap.add_argument("--requests", type=int, default=1000, help="tape size (demo traffic)")
    ap.add_argument("--aa-runs", type=int, default=200)
    ap.add_argument("--aa-limit", type=int, default=300, help="--limit of each A/A check (small, fast)")
    ap.add_argument("--aa-fixed-runs", type=int, default=None, help="A/A runs without --early-stop [default: --aa-runs]")
    ap.add_argument("--ab-runs", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    # SIGTERM (and SIGINT, also when started in the background) stop the servers on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    binary = os.path.abspath(a.bin)
    work = tempfile.mkdtemp(prefix="tapedeck-early-stop-")
    servers = []
    started = time.time()
    try:
        demo = os.path.join(work, "demo")
        p = subprocess.run([binary, "demo", "--candidate-build", "good", "--requests", str(a.requests),
                            "--out", demo], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"recording the demo tape failed: {p.stderr[-2000:]}")
        tape = os.path.join(demo, "tape")
        base, sec = Server(binary, ["--build", "v1"]), Server(binary, ["--build", "v1"])
        servers += [base, sec]
        rows = []
        for name, flags in EFFECTS:
            cand = Server(binary, flags)
            servers.append(cand)
            aa = name.startswith("A/A")
            for early in (True, False):
                n = a.aa_runs if aa else a.ab_runs
                if aa and not early and a.aa_fixed_runs is not None:
                    n = a.aa_fixed_runs
                limit = a.aa_limit if aa else None
                with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
                    res = list(ex.map(lambda _: check(binary, tape, base.url, sec.url, cand.url, work,
                                                      early, limit, a.alpha), range(n)))
                fails = sum(r["verdict"] == "fail" for r in res)
                lo, hi = clopper_pearson(fails, n)
                row = {
                    "effect": name, "early": early, "runs": n, "fails": fails, "rate": fails / n,
                    "ci": (lo, hi),
                    "verdicts": {v: sum(r["verdict"] == v for r in res) for v in ("pass", "marginal", "fail", "inconclusive")},
                    "sent": statistics.median(r["sent"] for r in res),
                    "secs": statistics.median(r["secs"] for r in res),
                    "wall": statistics.median(r["wall"] for r in res),
                    "stopped": sum(bool(r["stopped"]) for r in res),
                    "limit": limit,
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            cand.stop()
        load = os.getloadavg()
        lines = [
            f"Tape: {a.requests} requests of the demo's traffic; A/A checks `--limit {a.aa_limit}`; "
            f"α = {a.alpha}; {a.jobs} checks at a time; load average at the end "
            f"{load[0]:.1f}; took {time.time() - started:.0f} s.",
            "",
            "| effect | --early-stop | runs | fail (rate, 95 % CI) | pass / marginal / inconclusive | stopped early | median requests per target | median s to verdict | median wall s per check |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            v = r["verdicts"]
            lines.append(
                f"| {r['effect']} | {'yes' if r['early'] else 'no'} | {r['runs']} | {r['fails']} "
                f"({r['rate'] * 100:.1f} %, {r['ci'][0] * 100:.1f}–{r['ci'][1] * 100:.1f} %) | "
                f"{v['pass']} / {v['marginal']} / {v['inconclusive']} | "
                f"{r['stopped'] if r['early'] else '–'} | {r['sent']:.0f} | {r['secs']:.2f} | {r['wall']:.2f} |")
        text = "\n".join(lines) + "\n"
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
