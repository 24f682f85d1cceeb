#!/usr/bin/env python3
"""Scale: N real `meshrpc node` processes on this machine, each seeded with a random earlier
one (of the --seed-window before it, when given). By default each is started once the one
before it listens; with --at-once they are all started without waiting and in a random
order (--order), as docker compose or a Kubernetes StatefulSet with parallel pod management
starts them, so many seeds are not listening yet when first tried. Timings are the nodes' defaults unless --heartbeat-ms / --down-after-ms say otherwise.
Measures, from the nodes' own timestamped logs (so measuring adds no load):

  - convergence: from the last start until every node's latest word on every other one is
    `up` (a member that flapped down must be back); when it does not come, the islands (groups
    of nodes that see each other and no one else) and their sizes;
  - false downs: live members logged `down`, until convergence and after it;
  - detection: SIGKILL of --kills random nodes, until every live node has logged each of
    them down;
  - the idle cluster's CPU (all node processes, from /proc) and membership traffic per node
    (loopback bytes, from /proc/net/dev), over --idle-secs, after --settle-secs;
  - how often nodes logged that they run late (their failure detector stretched), by phase,
    and the load average at the last start and at the kills.

Kills every node it started and removes its logs when it ends, however it ends. A benchmark,
not a test: docs/MEMBERSHIP.md has its figures.

    cargo build --release && python3 scripts/scale.py --nodes 1000 --at-once [--json]
"""
import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

LINE = re.compile(r"^(\S+)\s+\S+\s+meshrpc::\S+: member (up|down|left) member=(\S+)")


def parse_ts(text):
    # 2026-12-01T12:53:46.413430Z
    return datetime.strptime(text.rstrip("Z")[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=timezone.utc).timestamp()


class Log:
    """One node's log, read incrementally: the latest status it logged for each member, and
    every `down` it logged, kept as the lines come (so following a thousand logs costs only their
    new lines, and the script's own CPU does not slow the cluster it measures)."""

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, ""
        self.downs, self.latest = [], {}
        self.late = []  # when the node found itself running late (its detector stretched)

    def read(self):
        try:
            with open(self.path, errors="replace") as log:
                log.seek(self.offset)
                chunk = log.read()
                self.offset = log.tell()
        except FileNotFoundError:
            return self
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        for line in lines:
            m = LINE.match(line)
            if not m:
                if "running late" in line:
                    self.late.append(parse_ts(line.split(" ", 1)[0]))
                continue
            kind, member = m.group(2), m.group(3)
            self.latest[member] = (kind, parse_ts(m.group(1)))
            if kind == "down":
                self.downs.append((parse_ts(m.group(1)), member))
        return self

    def up_now(self):
        return {member for member, (kind, _) in self.latest.items() if kind == "up"}


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, IndexError, ValueError):
            pass
    return total / ticks


def loopback_bytes():
    with open("/proc/net/dev") as dev:
        for line in dev:
            if line.strip().startswith("lo:"):
                return int(line.split(":", 1)[1].split()[0])
    return 0


def free_addrs(n):
    """n loopback addresses whose TCP and UDP ports are free (held together while chosen)."""
    import socket
    held = []
    while len(held) < n:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(tcp.getsockname())
        except OSError:
            tcp.close()
            udp.close()
            continue
        held.append((tcp, udp))
    addrs = ["%s:%d" % tcp.getsockname() for tcp, _ in held]
    for tcp, udp in held:
        tcp.close()
        udp.close()
    return addrs


def listening(proc, name):
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        raise SystemExit(f"{name} did not start: {line!r}")
    return line.removeprefix("listening on ")


def islands(names, logs_of):
    """Groups of nodes that see each other up, and no one else: the sizes, largest first.
    One island that has not converged yet is still one cluster."""
    seen = {n: logs_of[n].up_now() | {n} for n in names}
    parent = {n: n for n in names}

    def root(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in names:
        for m in seen[n]:
            if m in parent:
                parent[root(n)] = root(m)
    sizes = {}
    for n in names:
        sizes[root(n)] = sizes.get(root(n), 0) + 1
    return sorted(sizes.values(), reverse=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--idle-secs", type=float, default=10.0)
    parser.add_argument("--settle-secs", type=float, default=30.0,
                        help="after convergence, wait this long (the join storm's gossip backlog drains) before measuring idle")
    parser.add_argument("--heartbeat-ms", type=int, default=None, help="default: the node's own")
    parser.add_argument("--down-after-ms", type=int, default=None, help="default: the node's own")
    parser.add_argument("--at-once", action="store_true",
                        help="start every node without waiting for the one before to listen")
    parser.add_argument("--order", choices=["shuffled", "reverse", "index"], default="shuffled",
                        help="with --at-once, the order the nodes are started in (index: each after its seeds)")
    parser.add_argument("--seed-window", type=int, default=None,
                        help="seed each node with one of the N started just before it (default: any earlier one)")
    parser.add_argument("--threads", type=int, default=1,
                        help="worker threads per node (1: single-threaded, as befits a thousand nodes on two cores)")
    parser.add_argument("--patience", type=float, default=180.0,
                        help="give up waiting for convergence or detection after this long")
    parser.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshrpc"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep-logs", default=None,
                        help="move the nodes' logs to this folder at the end instead of deleting them")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # A SIGTERM (timeout, Ctrl-C's cousin) still runs the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    logs = tempfile.mkdtemp(prefix="meshrpc-scale-")
    procs, addrs, names = [], [], []
    result = {"nodes": args.nodes, "at_once": args.at_once,
              "order": args.order if args.at_once else "each after the one before",
              "seed_window": args.seed_window,
              "heartbeat_ms": args.heartbeat_ms or "default",
              "down_after_ms": args.down_after_ms or "default", "threads": args.threads}
    timing = []
    if args.heartbeat_ms:
        timing += ["--heartbeat-ms", str(args.heartbeat_ms)]
    if args.down_after_ms:
        timing += ["--down-after-ms", str(args.down_after_ms)]
    # Started at once, nodes must be named as seeds before they listen: their ports are
    # chosen first (free a moment ago, TCP and UDP both).
    planned = free_addrs(args.nodes) if args.at_once else None
    order = list(range(args.nodes))
    if args.at_once and args.order == "shuffled":
        rng.shuffle(order)
    elif args.at_once and args.order == "reverse":
        order.reverse()
    seeds = {}
    for i in range(1, args.nodes):
        window = range(max(0, i - args.seed_window) if args.seed_window else 0, i)
        seeds[i] = rng.choice(window)
    try:
        started = time.time()
        for i in order:
            name = f"n{i:04d}"
            listen = planned[i] if planned else "127.0.0.1:0"
            cmd = [args.bin, "node", "--name", name, "--listen", listen,
                   "--threads", str(args.threads)] + timing
            if i in seeds:
                cmd += ["--seed", planned[seeds[i]] if planned else addrs[seeds[i]]]
            log = open(os.path.join(logs, name), "w")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                    env={**os.environ, "RUST_LOG": "info"})
            log.close()
            procs.append(proc)
            names.append(name)
            if not planned:
                addrs.append(listening(proc, name))
        last_start = time.time()
        if planned:
            for proc, name in zip(procs, names):
                addrs.append(listening(proc, name))
        logs_of = {name: Log(os.path.join(logs, name)) for name in names}
        result["start_secs"] = round(last_start - started, 1)
        result["load_at_last_start"] = round(os.getloadavg()[0], 1)
        print(f"started {args.nodes} nodes in {result['start_secs']} s", file=sys.stderr)

        # Convergence: every node has logged every other one up.
        want = args.nodes - 1
        converged_at = {}
        deadline = last_start + args.patience
        while len(converged_at) < args.nodes and time.time() < deadline:
            time.sleep(1)
            for name in names:
                if name in converged_at:
                    continue
                # Every other member up now (a member that flapped down counts once it is
                # back), as of the latest of those ups.
                ups = [ts for kind, ts in logs_of[name].read().latest.values() if kind == "up"]
                if len(ups) >= want:
                    converged_at[name] = max(ups)
            behind = [n for n in names if n not in converged_at]
            tail = ""
            if 0 < len(behind) <= 3:
                tail = "; behind: " + ", ".join(
                    f"{n} lacks {sorted(set(names) - logs_of[n].up_now() - {n})[:4]}"
                    for n in behind)
            print(f"  {len(converged_at)}/{args.nodes} nodes see everyone up{tail}", file=sys.stderr)
        if len(converged_at) < args.nodes:
            result["converged"] = False
            result["converged_nodes"] = len(converged_at)
            # Who lacks whom: a tail of late starters, or members everyone missed?
            lacking = {}
            for name in names:
                if name not in converged_at:
                    seen = logs_of[name].up_now() | {name}
                    lacking[name] = sorted(set(names) - seen)
            result["lacking"] = {n: (len(m), m[:5]) for n, m in sorted(lacking.items())[:20]}
            result["islands"] = islands(names, logs_of)
        else:
            result["converged"] = True
            result["converge_secs"] = round(max(converged_at.values()) - last_start, 2)

        # Idle: CPU of every node process and loopback traffic, once the updates of the join
        # storm have been sent their number of times.
        time.sleep(args.settle_secs)
        pids = [p.pid for p in procs]
        cpu0, lo0, t0 = cpu_seconds(pids), loopback_bytes(), time.time()
        time.sleep(args.idle_secs)
        cpu1, lo1, t1 = cpu_seconds(pids), loopback_bytes(), time.time()
        result["idle_cores"] = round((cpu1 - cpu0) / (t1 - t0), 3)
        result["membership_bytes_per_sec_per_node"] = round((lo1 - lo0) / (t1 - t0) / args.nodes)

        # Detection: kill some, watch every live node log each of them down.
        victims = rng.sample(range(1, args.nodes), min(args.kills, args.nodes - 1))
        killed_at = time.time()
        result["load_at_kills"] = round(os.getloadavg()[0], 1)
        for i in victims:
            procs[i].send_signal(signal.SIGKILL)
        dead = {names[i] for i in victims}
        live = [n for n in names if n not in dead]
        detected = {}
        deadline = killed_at + args.patience
        while dead and len(detected) < len(live) and time.time() < deadline:
            time.sleep(1)
            for name in live:
                if name in detected:
                    continue
                downs = {}
                for ts, member in logs_of[name].read().downs:
                    if member in dead and ts >= killed_at:
                        downs.setdefault(member, ts)
                if len(downs) == len(dead):
                    detected[name] = max(downs.values())
            print(f"  {len(detected)}/{len(live)} live nodes saw all {len(dead)} kills", file=sys.stderr)
        # False downs: a live node logged down by another live node, during the start and
        # convergence (a saturated machine answers probes late), and after it.
        converged_by = max(converged_at.values(), default=time.time())
        early = late = 0
        for name in live:
            for ts, member in logs_of[name].read().downs:
                if member not in dead:
                    if ts <= converged_by:
                        early += 1
                    else:
                        late += 1
        result["false_downs_until_converged"] = early
        result["false_downs"] = late
        # Nodes that found themselves running late (their failure detector stretched), by
        # phase: starting and converging, settling, then idle and the kills.
        late_at = [ts for n in names for ts in logs_of[n].late]
        result["nodes_that_ran_late"] = sum(1 for n in names if logs_of[n].late)
        result["late_episodes_until_converged"] = sum(1 for ts in late_at if ts <= converged_by)
        result["late_episodes_settling"] = sum(1 for ts in late_at if converged_by < ts < t0)
        result["late_episodes_idle"] = sum(1 for ts in late_at if t0 <= ts < killed_at)
        result["late_episodes_after_kills"] = sum(1 for ts in late_at if ts >= killed_at)
        result["false_downs_idle_and_kills"] = sum(
            1 for n in live for ts, member in logs_of[n].downs if member not in dead and ts >= t0)
        if not dead:
            pass
        elif len(detected) == len(live):
            spans = sorted(ts - killed_at for ts in detected.values())
            result["detect_all_secs"] = round(spans[-1], 2)
            result["detect_median_secs"] = round(statistics.median(spans), 2)
        else:
            result["detected_everywhere"] = False
            result["detected_nodes"] = len(detected)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if args.keep_logs:
            shutil.rmtree(args.keep_logs, ignore_errors=True)
            shutil.move(logs, args.keep_logs)
        else:
            shutil.rmtree(logs, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:36} {v}")


if __name__ == "__main__":
    main()
