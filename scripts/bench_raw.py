#!/usr/bin/env python3
"""meshrpc between processes against the raw framed echo, in one run: the table of
docs/PERFORMANCE.md's "Against the raw echo, between processes".

For each workload, a server process and a load process on this machine's cores: the raw
echo (`benches/raw.rs`: tokio, length-delimited frames, bincode, a pending table, nothing
else) and a `meshrpc node` loaded by `meshrpc bench`. The two alternate, ROUNDS rounds of
SECS seconds after a WARMUP each; the table has the medians and their ratio.

    cargo build --release && cargo bench --bench raw --no-run
    python3 scripts/bench_raw.py [--secs 3] [--warmup 1] [--rounds 3] [--only 1x64]
        [--before OLD/target/release/meshrpc]

--before adds an older build's node and bench to the same rounds (before/after in one run).
"""
import argparse, json, os, select, statistics, subprocess, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MESHRPC = os.path.join(ROOT, "target", "release", "meshrpc")

# name, connections, in flight, echo payload (None: add(2, 3), whose arguments are 2 bytes), target
WORKLOADS = [
    ("1x64", "1 connection, 64 in flight, `add`", 1, 64, None, 0.95),
    ("4x256", "4 connections, 256 in flight, `add`", 4, 256, None, 0.95),
    ("1x1", "1 connection, 1 in flight, `add`", 1, 1, None, 0.95),
    ("64k", "64 KiB echo, 16 in flight", 1, 16, 65536, 1.5),
]


def raw_binary():
    """The bench executable cargo built (its name has a hash)."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "raw", "--no-run", "--message-format=json"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "raw" and msg.get("executable"):
            return msg["executable"]
    sys.exit("cargo did not name the raw bench's executable")


def start(cmd, ready):
    """Starts a server; returns it and the line that says it is ready (within 30 s)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "RUST_LOG": "error"})
    line = ""
    if select.select([proc.stdout], [], [], 30)[0]:
        line = proc.stdout.readline()
    if ready not in line:
        stop(proc)
        sys.exit(f"{cmd[0]} did not start: {line!r}")
    return proc, line


def stop(proc):
    proc.kill()
    proc.wait()


def raw_run(raw, work, opts):
    _, _, conns, inflight, payload, _ = work
    port = free_port()
    server, _ = start([raw, "server", f"127.0.0.1:{port}"], "ready")
    try:
        out = subprocess.run(
            [raw, "client", f"127.0.0.1:{port}", str(conns), str(inflight), str(payload or 2),
             str(opts.warmup), str(opts.secs)], capture_output=True, text=True, timeout=(opts.warmup + opts.secs) * 4 + 30)
        if out.returncode != 0:
            sys.exit(f"raw client failed: {out.stderr}")
        return json.loads(out.stdout)["calls_per_sec"]
    finally:
        stop(server)


def meshrpc_run(work, opts, binary=MESHRPC):
    _, _, conns, inflight, payload, _ = work
    node, line = start([binary, "node", "--name", "bench", "--listen", "127.0.0.1:0"], "listening")
    try:
        addr = line.split()[-1]
        args = [binary, "bench", addr, "--json", "--connections", str(conns), "--concurrency", str(inflight),
                "--duration", str(opts.secs), "--warmup", str(opts.warmup)]
        if payload:
            args += ["--payload", str(payload)]
        out = subprocess.run(args, capture_output=True, text=True, timeout=(opts.warmup + opts.secs) * 4 + 30)
        if out.returncode != 0:
            sys.exit(f"meshrpc bench failed: {out.stderr}")
        report = json.loads(out.stdout)
        if report["errors"]:
            sys.exit(f"meshrpc bench had errors: {report['errors']}")
        cpu = (report.get("client_cpu_us_per_call"), report.get("node_cpu_us_per_call"))
        return report["calls_per_sec"], (sum(cpu) if None not in cpu else float("nan"))
    finally:
        stop(node)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, default=3)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="an older meshrpc binary, measured in the same rounds")
    parser.add_argument("--only", action="append", help="a workload's short name: " +
                        ", ".join(w[0] for w in WORKLOADS))
    opts = parser.parse_args()
    raw = raw_binary()
    works = [w for w in WORKLOADS if not opts.only or w[0] in opts.only]
    runs = {w[0]: ([], [], [], []) for w in works}
    for round_ in range(opts.rounds):
        for work in works:
            raws, meshes, cpus, befores = runs[work[0]]
            sides = [lambda: raws.append(raw_run(raw, work, opts)),
                     lambda: record(meshes, cpus, meshrpc_run(work, opts))]
            if opts.before:
                sides.append(lambda: befores.append(meshrpc_run(work, opts, opts.before)[0]))
            # Rotate who goes first, so no side always runs on a warmer machine.
            for i in range(len(sides)):
                sides[(i + round_) % len(sides)]()
            before = f", before {befores[-1]:,.0f}" if opts.before else ""
            print(f"round {round_ + 1} {work[0]}: raw {raws[-1]:,.0f}, meshrpc {meshes[-1]:,.0f}{before} calls/s",
                  file=sys.stderr)
    before_head = ("| before | before / raw " if opts.before else "")
    print(f"| workload | raw echo {before_head}| meshrpc | meshrpc / raw | target | meshrpc CPU/call (bench + node) |")
    print("|---|---|" + ("---|---|" if opts.before else "") + "---|---|---|---|")
    for work in works:
        raws, meshes, cpus, befores = runs[work[0]]
        r, m = statistics.median(raws), statistics.median(meshes)
        ratio = m / r
        mark = "✓" if ratio >= work[5] else "✗"
        before = ""
        if opts.before:
            b = statistics.median(befores)
            before = f"| {b:,.0f} calls/s | {b / r:.2f}× "
        print(f"| {work[1]} | {r:,.0f} calls/s {before}| {m:,.0f} calls/s | {ratio:.2f}× | ≥ {work[5]}× {mark} | "
              f"{statistics.median(cpus):.2f} µs |")


def record(meshes, cpus, run):
    meshes.append(run[0])
    cpus.append(run[1])


if __name__ == "__main__":
    main()
