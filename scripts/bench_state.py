#!/usr/bin/env python3
"""Persistent virtual actors against volatile ones, in one run on one machine.

One `meshrpc node` at a time — without a state store, with `--state sqlite:FILE`, and with
`--state postgres://...` on a PostgreSQL server this script starts (Debian's `postgresql`;
skipped, saying so, where its programs are missing) — loaded by `meshrpc bench` with 64
callers on `vcounter.incr` over 1, 64 and 1024 keys. Every store keeps its defaults:
SQLite with `synchronous = FULL`, PostgreSQL with fsync and synchronous commit on; SQLite
is measured with `?synchronous=normal` too.

Prints a markdown table for docs/PERFORMANCE.md.
Usage: scripts/bench_state.py [--secs 3] [--rounds 3] [--keys 1,64,1024] [--bin PATH]
(builds nothing: run `cargo build --release` first)
"""
import argparse, glob, json, os, shutil, socket, subprocess, sys, tempfile

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshrpc")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_programs():
    found = shutil.which("initdb") and shutil.which("pg_ctl")
    if found:
        return os.path.dirname(shutil.which("pg_ctl"))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(versions[-1]) if versions else None


class Postgres:
    """A server of this run's own in a temporary folder (as `postgres` when run as root)."""

    def __init__(self, folder):
        self.bin, self.folder = pg_programs(), folder
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server programs (initdb, pg_ctl)")
        self.root = os.geteuid() == 0
        if self.root:
            subprocess.run(["chown", "-R", "postgres", folder], check=True)
        self.data = os.path.join(folder, "data")
        self.run("initdb", "-D", self.data, "-A", "trust", "-U", "meshrpc", "-E", "UTF8")
        port = free_port()
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        self.run("pg_ctl", "-D", self.data, "-o", options, "-l",
                 os.path.join(folder, "log"), "-w", "start")
        self.url = f"postgres://meshrpc@127.0.0.1:{port}/postgres"

    def run(self, program, *args):
        command = [os.path.join(self.bin, program), *args]
        if self.root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "stop")


def bench(bin, state, keys, secs, rounds):
    """calls/s and CPU per call for each key count, on a node with `state` (or none): the
    round with the median rate of `rounds`."""
    extra = ["--state", state] if state else []
    node = subprocess.Popen([bin, "node", "--name", "s", "--listen", "127.0.0.1:0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = node.stdout.readline().strip().removeprefix("listening on ")
        rows = {}
        for n in keys:
            spread = ["--keys", str(n)] if n > 1 else []
            runs = []
            for _ in range(rounds):
                out = subprocess.run(
                    [bin, "bench", addr, "--method", f"vcounter.incr/k{n}", "--args", "[1]",
                     "--concurrency", "64", "--duration", str(secs), "--warmup", "0.5",
                     "--json", *spread],
                    check=True, capture_output=True, text=True).stdout
                report = json.loads(out)
                cpu = ((report.get("client_cpu_us_per_call") or 0)
                       + (report.get("node_cpu_us_per_call") or 0))
                runs.append((report["calls_per_sec"], cpu, sum(report["errors"].values())))
            rows[n] = sorted(runs)[len(runs) // 2]
        return rows
    finally:
        node.kill()
        node.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, default=3)
    parser.add_argument("--keys", default="1,64,1024")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bin", default=BIN)
    args = parser.parse_args()
    keys = [int(k) for k in args.keys.split(",")]
    folder = tempfile.mkdtemp(prefix="meshrpc-bench-state-")
    os.chmod(folder, 0o777)
    results, pg = {}, None
    try:
        results["volatile"] = bench(args.bin, None, keys, args.secs, args.rounds)
        results["SQLite"] = bench(args.bin, "sqlite:" + os.path.join(folder, "state.db"), keys, args.secs, args.rounds)
        normal = "sqlite:" + os.path.join(folder, "normal.db") + "?synchronous=normal"
        results["SQLite, synchronous=normal"] = bench(args.bin, normal, keys, args.secs, args.rounds)
        try:
            pg_folder = os.path.join(folder, "pg")
            os.mkdir(pg_folder)
            pg = Postgres(pg_folder)
            results["PostgreSQL"] = bench(args.bin, pg.url, keys, args.secs, args.rounds)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"PostgreSQL skipped: {e}", file=sys.stderr)
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)
    stores = list(results)
    print("| keys (64 callers) | " + " | ".join(stores) + " |")
    print("|---" * (len(stores) + 1) + "|")
    for n in keys:
        base = results["volatile"][n][0]
        cells = []
        for store in stores:
            rate, cpu, errors = results[store][n]
            ratio = "" if store == "volatile" else f" ({rate / base:.2f}×)"
            failed = f", {errors} errors" if errors else ""
            cells.append(f"{rate / 1000:.1f} k{ratio}, {cpu:.1f} µs CPU{failed}")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
