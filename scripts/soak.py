#!/usr/bin/env python3
"""Soak: a 5-node cluster under mixed load with random kill -9s and restarts, bounded in time.
Prints the load's counts and checks the cluster converges at the end. Not a test; .ci/run
runs a short version (--secs 15).

    cargo build --release && python3 scripts/soak.py [--secs 120] [--bin target/release/meshrpc]
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

FAST = ["--heartbeat-ms", "200", "--down-after-ms", "2000"]


def start(binary, name, listen, seed):
    args = [binary, "node", "--name", name, "--listen", listen] + FAST
    if seed:
        args += ["--seed", seed]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        raise SystemExit(f"{name} did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


def members(binary, addr):
    out = subprocess.run([binary, "members", "--json", "--timeout-ms", "3000", addr],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    return {m["name"]: m["status"] for m in json.loads(out.stdout)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=int, default=120)
    parser.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshrpc"))
    parser.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    binary = args.bin

    nodes = {}
    first = None
    for i in range(5):
        name = f"s{i}"
        proc, addr = start(binary, name, "127.0.0.1:0", first)
        first = first or addr
        nodes[name] = [proc, addr]
    loads = []
    kills = restarts = 0
    deadline = time.time() + args.secs
    try:
        while time.time() < deadline:
            # Mixed load: small calls, payloads, node-to-node, each a few seconds long.
            name = rng.choice(list(nodes))
            addr = nodes[name][1]
            kind = rng.choice(["add", "echo", "relay"])
            cmd = [binary, "bench", "--json", "--duration", "3", "--timeout-ms", "2000"]
            if kind == "add":
                cmd += [addr, "--concurrency", "16"]
            elif kind == "echo":
                cmd += [addr, "--payload", "16384", "--concurrency", "4"]
            else:
                other = rng.choice([n for n in nodes if n != name])
                cmd += ["--from", addr, "--to", other, "--concurrency", "8"]
            loads.append((kind, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            time.sleep(rng.uniform(0.5, 2.0))
            # Now and then, kill a node (never the last seed-holder) and bring it back.
            if rng.random() < 0.3:
                victim = rng.choice([n for n in nodes if n != "s0"])
                proc, addr = nodes[victim]
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                time.sleep(rng.uniform(0.2, 1.5))
                nodes[victim] = list(start(binary, victim, addr, first))
                restarts += 1
        calls = errors = failed_runs = 0
        by_kind = {}
        for kind, proc in loads:
            out, err = proc.communicate(timeout=30)
            if proc.returncode != 0:
                failed_runs += 1  # e.g. its node was killed before it connected
                continue
            report = json.loads(out)
            calls += report["calls"]
            for k, n in report["errors"].items():
                by_kind[k] = by_kind.get(k, 0) + n
                errors += n
        print(f"{len(loads)} load runs ({failed_runs} could not start), {calls} calls ok, {errors} failed {by_kind}")
        print(f"{kills} kills, {restarts} restarts")
        # Convergence: every node sees all five up, within a bounded wait.
        want = {n: "up" for n in nodes}
        settle = time.time() + 30
        while time.time() < settle:
            views = {n: members(binary, a) for n, (_, a) in nodes.items()}
            if all(v == want for v in views.values()):
                print("converged: every node sees all five up")
                return 0
            time.sleep(0.5)
        print(f"NOT converged: {views}")
        return 1
    finally:
        for proc, _ in nodes.values():
            proc.kill()
            proc.wait()
        for _, proc in loads:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
