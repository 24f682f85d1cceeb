#!/usr/bin/env python3
"""The tutorial's `add`, served two ways, called by Python's own `xmlrpc.client`.

One server is Python's `SimpleXMLRPCServer` with `add` registered, as in the blog post the
project grew from; the other is a `meshrpc node --http` (whose demo services include `add`).
The same client program calls each: one client process calling in a loop (sequential),
then CLIENTS client processes at once. Each figure is the median of ROUNDS rounds of SECS
seconds, the two servers alternating, in one run on one machine.

Prints a markdown table for docs/PERFORMANCE.md.
Usage: scripts/bench_xmlrpc.py [--secs 3] [--rounds 3] [--clients 8] [--bin PATH]
(builds nothing: run `cargo build --release` first)
"""
import argparse, multiprocessing, os, re, socket, statistics, subprocess, sys, time
import xmlrpc.client

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshrpc")

SERVER = """
import sys
from xmlrpc.server import SimpleXMLRPCServer

server = SimpleXMLRPCServer(("127.0.0.1", int(sys.argv[1])), logRequests=False)
server.register_function(lambda a, b: a + b, "add")
print("ready", flush=True)
server.serve_forever()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(url, secs, out):
    """Calls add(2, 3) over one proxy until `secs` pass; puts how many it made."""
    proxy = xmlrpc.client.ServerProxy(url)
    stop, n = time.monotonic() + secs, 0
    while time.monotonic() < stop:
        if proxy.add(2, 3) != 5:
            raise SystemExit("a wrong sum")
        n += 1
    out.put(n)


def rate(url, secs, clients):
    """Calls per second of `clients` client processes against `url`."""
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=client, args=(url, secs, out)) for _ in range(clients)]
    started = time.monotonic()
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return total / (time.monotonic() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--bin", default=BIN)
    opts = parser.parse_args()
    port = free_port()
    python = subprocess.Popen([sys.executable, "-c", SERVER, str(port)],
                              stdout=subprocess.PIPE, text=True)
    node = subprocess.Popen(
        [opts.bin, "node", "--name", "bench-xmlrpc", "--listen", "127.0.0.1:0",
         "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if python.stdout.readline().strip() != "ready":
            sys.exit("SimpleXMLRPCServer did not start")
        http = None
        for line in node.stdout:
            found = re.search(r"http on (\S+)", line)
            if found:
                http = found.group(1)
                break
        if http is None:
            sys.exit("the node did not start its gateway")
        urls = {"SimpleXMLRPCServer": f"http://127.0.0.1:{port}", "meshrpc gateway": f"http://{http}"}
        rows = {name: {1: [], opts.clients: []} for name in urls}
        for _ in range(opts.rounds):
            for clients in (1, opts.clients):
                for name, url in urls.items():
                    rows[name][clients].append(rate(url, opts.secs, clients))
        print(f"| server | 1 client, sequential | {opts.clients} client processes |")
        print("|---|---|---|")
        for name in urls:
            one = statistics.median(rows[name][1])
            many = statistics.median(rows[name][opts.clients])
            print(f"| {name} | {one:,.0f} calls/s | {many:,.0f} calls/s |")
    finally:
        for proc in (python, node):
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
