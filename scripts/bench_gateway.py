#!/usr/bin/env python3
"""The HTTP gateway's own cost, in one run, on one `meshrpc node` (loopback).

Keep-alive JSON-RPC `add(2, 3)` calls through the gateway against `GET /health` on the same
connections (the HTTP stack alone, nothing dispatched): the ratio is what a call costs the
gateway beyond HTTP. THREADS client threads, each with one keep-alive connection, alternate
the two workloads over ROUNDS rounds of SECS seconds each. The Python client saturates a
core before the node does, so the node's CPU per request (user + system, from /proc) is the
sharper figure.

Prints a markdown table of medians for docs/PERFORMANCE.md.
Usage: scripts/bench_gateway.py [--secs 3] [--rounds 3] [--threads 4] [--bin PATH]
(builds nothing: run `cargo build --release` first)
"""
import argparse, http.client, json, os, re, statistics, subprocess, sys, threading, time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshrpc")
BODY = json.dumps({"jsonrpc": "2.0", "method": "add", "params": [2, 3], "id": 1}).encode()


def cpu_secs(pid):
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(host, port, secs, threads, what):
    """Requests per second of `what` ("add" or "health") over `threads` connections, and
    how many were made."""
    counts = [0] * threads
    stop = time.monotonic() + secs

    def worker(i):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        while time.monotonic() < stop:
            if what == "add":
                conn.request("POST", "/", body=BODY, headers={"Content-Type": "application/json"})
                reply = conn.getresponse().read()
                if b'"result":5' not in reply.replace(b" ", b""):
                    raise SystemExit(f"unexpected answer: {reply!r}")
            else:
                conn.request("GET", "/health")
                conn.getresponse().read()
            counts[i] += 1
        conn.close()

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.monotonic() - started), sum(counts)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--bin", default=BIN)
    opts = parser.parse_args()
    node = subprocess.Popen(
        [opts.bin, "node", "--name", "bench-gateway", "--listen", "127.0.0.1:0",
         "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        http_addr = None
        for line in node.stdout:
            found = re.search(r"http on (\S+)", line)
            if found:
                http_addr = found.group(1)
                break
        if http_addr is None:
            sys.exit("the node did not start its gateway")
        host, port = http_addr.rsplit(":", 1)
        rows = {"add": [], "health": []}
        cpu = {"add": [], "health": []}
        for _ in range(opts.rounds):
            for what in ("add", "health"):
                before = cpu_secs(node.pid)
                rate, n = load(host, int(port), opts.secs, opts.threads, what)
                rows[what].append(rate)
                cpu[what].append((cpu_secs(node.pid) - before) / n * 1e6)
        add, health = statistics.median(rows["add"]), statistics.median(rows["health"])
        add_us, health_us = statistics.median(cpu["add"]), statistics.median(cpu["health"])
        print("| JSON-RPC `add` | `GET /health` | add / health | node CPU per `add` | per `/health` |")
        print("|---|---|---|---|---|")
        print(f"| {add:,.0f} calls/s | {health:,.0f} requests/s | {add / health:.2f} "
              f"| {add_us:.1f} µs | {health_us:.1f} µs |")
    finally:
        node.kill()
        node.wait()


if __name__ == "__main__":
    main()
