#!/usr/bin/env python3
"""Memory of a meshrpc node: resident set size idle, per idle connection, and over a run at
constant load. Not a test (it takes a minute); docs/PERFORMANCE.md records its output.

    cargo build --release && python3 scripts/memory.py [--connections 200] [--load-secs 60]

The idle connections are plain clients written here from docs/PROTOCOL.md alone: they read
the greeting, send a hello, read the welcome, then send a Ping every second so the node does
not drop them as silent.
"""
import argparse
import os
import socket
import struct
import subprocess
import sys
import threading
import time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshrpc")


def varint(n):
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + struct.pack("<H", n)
    if n < 1 << 32:
        return b"\xfc" + struct.pack("<I", n)
    return b"\xfd" + struct.pack("<Q", n)


def string(s):
    data = s.encode()
    return varint(len(data)) + data


def handshake_frame(message):
    payload = b"MRPC" + struct.pack(">H", 3) + message
    return struct.pack(">I", len(payload)) + payload


def read_frame(sock):
    head = recv_exact(sock, 4)
    return recv_exact(sock, struct.unpack(">I", head)[0])


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def connect(addr, i):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    read_frame(sock)  # greeting
    identity = varint(1000 + i) + string(f"idle-{i}") + b"\x00" + varint(1 << 20) + varint(0)
    hello = identity + bytes(16) + b"\x00"  # nonce, no cookie proof
    sock.sendall(handshake_frame(hello))
    welcome = read_frame(sock)
    if welcome[6] != 0:  # Verdict::Accept
        raise RuntimeError(f"refused: {welcome!r}")
    return sock


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--load-secs", type=int, default=60)
    args = parser.parse_args()

    node = subprocess.Popen([BIN, "node", "--name", "mem", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = node.stdout.readline().strip().removeprefix("listening on ")
        time.sleep(1)
        idle = rss_kib(node.pid)
        print(f"idle node: {idle} KiB resident")

        socks = [connect(addr, i) for i in range(args.connections)]
        stop = threading.Event()

        def ping():
            frame = struct.pack(">I", 1) + b"\x05"  # Header::Ping
            while not stop.wait(1.0):
                for s in socks:
                    s.sendall(frame)

        pinger = threading.Thread(target=ping, daemon=True)
        pinger.start()
        time.sleep(2)
        held = rss_kib(node.pid)
        print(f"{args.connections} idle connections: {held} KiB resident, "
              f"{(held - idle) / args.connections:.1f} KiB per connection")
        stop.set()
        for s in socks:
            s.close()
        time.sleep(1)
        print(f"after closing them: {rss_kib(node.pid)} KiB resident")

        bench = subprocess.Popen([BIN, "bench", addr, "--duration", str(args.load_secs),
                                  "--concurrency", "64", "--json"], stdout=subprocess.PIPE, text=True)
        samples = []
        start = time.time()
        while bench.poll() is None:
            samples.append((time.time() - start, rss_kib(node.pid)))
            time.sleep(5)
        report = bench.stdout.read().strip()
        for t, kib in samples:
            print(f"  load t={t:5.1f}s: {kib} KiB resident")
        print(f"load report: {report}")
        if len(samples) > 3:
            early, late = samples[2][1], samples[-1][1]
            print(f"growth from t={samples[2][0]:.0f}s to the end: {late - early:+d} KiB")
    finally:
        node.terminate()
        node.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
