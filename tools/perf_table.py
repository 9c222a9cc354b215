#!/usr/bin/env python3
"""Cardinal's performance table: the server-level figures of the performance targets, measured
with `cardinal bench` against a release server on this machine (generator and server share the
cores, as the targets assume).

Run from the repository root after `cargo build --release`:

    python3 tools/perf_table.py                      # every row, ~3 minutes
    python3 tools/perf_table.py --rounds 3           # alternate rounds, report the median
    python3 tools/perf_table.py --large REQUEST.json --large-service opioidcds-04-05

Rows: patient-greeting and opioidcds-04-05 closed loop (maximum goodput and server CPU per call),
each at half of that maximum with a fixed rate (open model: p50/p99 without coordinated omission),
HTTP against gRPC at 200 calls/s, and optionally one large request (server CPU per call). The
in-process figures the CPU per call is compared with come from criterion:
`cargo bench --bench opioid -- rec-04-05` and `cargo bench --bench large_patient`.

Server CPU is read from /proc/PID/stat (user + system), so the figures are Linux only. The server is
started with `serve --dev` (the opioid case pins its evaluation time), its data in a temporary
directory (SQLite store and audit trail on, the shipped defaults).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

GREETING = "rules/patient-greeting/tests/greets-the-patient.json"
OPIOID = "rules/opioid-cds/tests/rec-04-05-mme-greater-than-fifty.json"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A release server with its own data directory and ports."""

    def __init__(self, binary, env):
        self.dir = tempfile.mkdtemp(prefix="cardinal-perf-")
        self.port, admin = free_port(), free_port()
        environment = dict(os.environ, CARDINAL_DATA_DIR=self.dir,
                           CARDINAL_ADMIN_LISTEN=f"127.0.0.1:{admin}", **env)
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--dev", "--listen", f"127.0.0.1:{self.port}"],
            env=environment, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1)
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        sys.exit(f"the server did not become ready; see {self.dir}/server.log")

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def stop(self):
        self.process.terminate()
        self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def bench(binary, server, request, args, extra):
    """One `cardinal bench` run: its JSON report plus the server's CPU seconds during it."""
    before = server.cpu_seconds()
    out = subprocess.run(
        [binary, "bench", "--url", f"http://127.0.0.1:{server.port}", "--request", request,
         "--duration", f"{args.duration}s", "--warmup", "1s", "--json", *extra],
        capture_output=True, text=True)
    after = server.cpu_seconds()
    if not out.stdout.strip():
        sys.exit(f"cardinal bench failed: {out.stderr.strip()}")
    report = json.loads(out.stdout)
    if report.get("card_mismatches"):
        sys.exit(f"{request}: answers differed under load ({report['card_mismatches']})")
    # Calls answered during the run, warm-up included (the CPU was read around both).
    calls = report["completed"] + round(report["goodput"])
    report["cpu_us_per_call"] = (after - before) / max(calls, 1) * 1e6
    return report


def row(report):
    latency = report["latency_ms"]["accepted"]
    return {"goodput": report["goodput"], "p50": latency["p50"], "p99": latency["p99"],
            "cpu_us": report["cpu_us_per_call"]}


def median_rows(rounds):
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/cardinal")
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (default 8)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds to take the median of")
    parser.add_argument("--large", help="a large CDS Hooks request (e.g. a Synthea order-sign)")
    parser.add_argument("--large-service", default="opioidcds-04-05")
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} is missing: run `cargo build --release` first")

    results = {}

    def measure(label, request, extra, server_env=None):
        rounds = []
        for _ in range(args.rounds):
            server = Server(args.binary, server_env or {})
            try:
                rounds.append(row(bench(args.binary, server, request, args, extra)))
            finally:
                server.stop()
        results[label] = median_rows(rounds)
        r = results[label]
        print(f"  {label}: {r['goodput']:,.0f} calls/s, p50 {r['p50']:.2f} ms, "
              f"p99 {r['p99']:.2f} ms, server CPU {r['cpu_us']:.0f} µs/call", file=sys.stderr)
        return r

    print("measuring (each run starts a fresh server)…", file=sys.stderr)
    greeting = measure("greeting max", GREETING, ["--connections", "16"])
    half = max(1, round(greeting["goodput"] / 2))
    measure(f"greeting at {half}/s", GREETING, ["--rate", str(half), "--connections", "64"])
    opioid = measure("opioid max", OPIOID, ["--connections", "64"])
    half = max(1, round(opioid["goodput"] / 2))
    measure(f"opioid at {half}/s", OPIOID, ["--rate", str(half), "--connections", "64"])
    for name, request in (("greeting", GREETING), ("opioid", OPIOID)):
        measure(f"{name} HTTP 200/s", request, ["--rate", "200", "--connections", "8"])
        measure(f"{name} gRPC 200/s", request, ["--rate", "200", "--connections", "8", "--grpc"])
    if args.large:
        measure("large request 20/s", args.large,
                ["--rate", "20", "--connections", "4", "--service", args.large_service])

    print("\n| run | goodput (calls/s) | p50 ms | p99 ms | server CPU µs/call |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['goodput']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_us']:.0f} |")


if __name__ == "__main__":
    main()
