#!/usr/bin/env python3
"""Streams against calls, side by side in one run, on one `meshrpc node` (loopback).

1. MB/s of a server stream of 64 KiB items against the unary 64 KiB echo, both with 16 in
   flight (`meshrpc bench --stream` vs `--payload`), alternated over ROUNDS rounds;
2. p99 of a unary call (`add`) on an idle link against the same link with a stalled
   stream on it (`--stalled-stream`: a stream nobody reads, its window full).

Prints a markdown table of medians and ratios for docs/PERFORMANCE.md.
Usage: scripts/bench_streams.py [--secs 3] [--rounds 3]   (builds nothing: run
`cargo build --release` first)
"""
import argparse, json, os, re, statistics, subprocess, sys

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshrpc")


def bench(addr, secs, *extra):
    out = subprocess.run([BIN, "bench", addr, "--duration", str(secs), "--json", *extra],
                         check=True, capture_output=True, text=True, timeout=secs * 4 + 60)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    node = subprocess.Popen([BIN, "node", "--name", "bench-streams", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = None
        for line in node.stdout:
            found = re.search(r"listening on (\S+)", line)
            if found:
                addr = found.group(1)
                break
        if addr is None:
            sys.exit("the node did not start")
        rows = {"stream": [], "echo": [], "idle_p99": [], "stalled_p99": []}
        for _ in range(opts.rounds):
            rows["stream"].append(bench(addr, opts.secs, "--stream", "--payload", "65536",
                                        "--concurrency", "16")["mb_per_sec"])
            rows["echo"].append(bench(addr, opts.secs, "--payload", "65536",
                                      "--concurrency", "16")["mb_per_sec"])
            rows["idle_p99"].append(bench(addr, opts.secs, "--concurrency", "16")["p99_us"])
            rows["stalled_p99"].append(bench(addr, opts.secs, "--concurrency", "16",
                                             "--stalled-stream")["p99_us"])
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"| measure (median of {opts.rounds} × {opts.secs:g} s) | baseline | streams | ratio | target |")
        print("|---|---|---|---|---|")
        print(f"| 64 KiB payload, 16 in flight, MB/s one way | echo {med['echo']:.0f} | "
              f"stream {med['stream']:.0f} | {med['stream'] / med['echo']:.2f} | ≥ 1 |")
        print(f"| `add` p99, 16 in flight, µs | idle link {med['idle_p99']:.0f} | "
              f"stalled stream on it {med['stalled_p99']:.0f} | "
              f"{med['stalled_p99'] / med['idle_p99']:.2f} | ≤ 2 |")
        print("\nall rounds:", json.dumps(rows))
    finally:
        node.kill()
        node.wait()


if __name__ == "__main__":
    main()
