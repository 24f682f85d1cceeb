#!/usr/bin/env python3
"""Python peers, measured: the figures of docs/PERFORMANCE.md's "Python peers" section.

1. Sequential `add(2, 3)` from Python against one `meshrpc node --http`: through
   `meshrpc.ServerProxy` (the binary protocol) and through `xmlrpc.client` (the node's
   gateway), the two alternating, ROUNDS rounds of SECS seconds, medians; and a Rust
   client's rate with one call in flight against the same node, the bound of the first.
2. The same for a server written in Python: the tutorial's class served by `meshrpc.Node`
   and called by `meshrpc.ServerProxy`, against Python's own `SimpleXMLRPCServer` called by
   `xmlrpc.client`.
3. `meshrpc bench` against a Python peer's `add` (a typed Rust caller), 1 and 64 in flight.
4. The Python node's own Rust methods while its Python handlers are busy: p99 of
   `system.listMethods` on it, idle and while another load keeps a Python handler that spins
   for 1 ms (holding the GIL) busy.

Run it with an interpreter that has the package (after `cargo build --release`):
    python3 -m venv /tmp/v && /tmp/v/bin/pip install ./python
    /tmp/v/bin/python scripts/bench_python.py [--secs 3] [--rounds 3]
"""
import argparse, json, os, re, statistics, subprocess, sys, time
import xmlrpc.client

import meshrpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_xmlrpc import SERVER as XMLRPC_SERVER, free_port  # noqa: E402  the same server

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshrpc")

PY_SERVER = """
import sys, time, meshrpc

class MyServer:
    def add(self, a: int, b: int) -> int:
        return a + b

    def spin(self, ms: int) -> int:
        end = time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            pass
        return ms

node = meshrpc.Node("py-bench")
node.register_instance(MyServer())
print(node.addr, flush=True)
node.serve_forever()
"""

def sequential(proxy, secs):
    """add(2, 3) in a loop for `secs`: calls per second."""
    stop, n = time.monotonic() + secs, 0
    started = time.monotonic()
    while time.monotonic() < stop:
        if proxy.add(2, 3) != 5:
            raise SystemExit("a wrong sum")
        n += 1
    return n / (time.monotonic() - started)


def bench(bin_path, addr, *args):
    done = subprocess.run([bin_path, "bench", addr, "--json", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"meshrpc bench failed: {done.stderr}")
    return json.loads(done.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bin", default=BIN)
    opts = parser.parse_args()
    quiet = {**os.environ, "RUST_LOG": "error"}
    node = subprocess.Popen(
        [opts.bin, "node", "--name", "bench-rust", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=quiet)
    py_node = subprocess.Popen([sys.executable, "-c", PY_SERVER], stdout=subprocess.PIPE, text=True, env=quiet)
    port = free_port()
    simple = subprocess.Popen([sys.executable, "-c", XMLRPC_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        addr = node.stdout.readline().split()[-1]
        http = re.search(r"http on (\S+)", node.stdout.readline()).group(1)
        py_addr = py_node.stdout.readline().strip()
        if simple.stdout.readline().strip() != "ready":
            sys.exit("SimpleXMLRPCServer did not start")
        pairs = {
            "Rust node": (meshrpc.ServerProxy(f"mesh://{addr}"), xmlrpc.client.ServerProxy(f"http://{http}")),
            "Python server": (meshrpc.ServerProxy(f"mesh://{py_addr}"),
                              xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}")),
        }
        rates = {name: ([], []) for name in pairs}
        for _ in range(opts.rounds):
            for name, (mesh, xml) in pairs.items():
                rates[name][0].append(sequential(mesh, opts.secs))
                rates[name][1].append(sequential(xml, opts.secs))
        print("| server of `add` | `meshrpc.ServerProxy` | `xmlrpc.client` | ratio |")
        print("|---|---|---|---|")
        labels = {"Rust node": "a `meshrpc node` (its gateway for xmlrpc.client)",
                  "Python server": "Python: `meshrpc.Node` / `SimpleXMLRPCServer`"}
        for name in pairs:
            mesh, xml = (statistics.median(r) for r in rates[name])
            print(f"| {labels[name]} | {mesh:,.0f} calls/s | {xml:,.0f} calls/s | {mesh / xml:.1f}× |")
        # The bound: a Rust client, one call in flight, against the same node.
        rust = statistics.median(
            bench(opts.bin, addr, "--duration", str(opts.secs), "--concurrency", "1")["calls_per_sec"]
            for _ in range(opts.rounds))
        print(f"| (`meshrpc bench`, a Rust client, 1 in flight, same node) | {rust:,.0f} calls/s | | |")
        print()
        print("| `meshrpc bench` → Python peer's `add` | calls/s | p50 | p99 | node CPU/call |")
        print("|---|---|---|---|---|")
        for inflight in (1, 64):
            runs = [bench(opts.bin, py_addr, "--duration", str(opts.secs), "--concurrency", str(inflight))
                    for _ in range(opts.rounds)]
            run = sorted(runs, key=lambda r: r["calls_per_sec"])[len(runs) // 2]
            assert not run["errors"], run["errors"]
            print(f"| {inflight} in flight | {run['calls_per_sec']:,.0f} | {run['p50_us']} µs | "
                  f"{run['p99_us']} µs | {run.get('node_cpu_us_per_call', 0):.1f} µs |")
        print()
        probe = ["--method", "system.listMethods", "--args", "[]", "--concurrency", "4",
                 "--duration", str(opts.secs)]
        idle = [bench(opts.bin, py_addr, *probe)["p99_us"] for _ in range(opts.rounds)]
        busy = []
        for _ in range(opts.rounds):
            hog = subprocess.Popen(
                [opts.bin, "bench", py_addr, "--method", "spin", "--args", "[1]", "--concurrency", "8",
                 "--duration", str(opts.secs + 1), "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            busy.append(bench(opts.bin, py_addr, *probe)["p99_us"])
            spun = json.loads(hog.communicate()[0])
        idle, busy = statistics.median(idle), statistics.median(busy)
        print("| the Python node's `system.listMethods`, 4 in flight | p99 |")
        print("|---|---|")
        print(f"| Python handlers idle | {idle:,.0f} µs |")
        print(f"| Python handlers busy ({spun['calls_per_sec']:,.0f} spins of 1 ms/s) | {busy:,.0f} µs "
              f"({busy / idle:.2f}×) |")
    finally:
        for proc in (node, py_node, simple):
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
