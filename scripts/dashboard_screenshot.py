#!/usr/bin/env python3
"""A screenshot of the live dashboard for the README: three `meshrpc node` processes on
loopback, one with the gateway, some load on it (calls, a virtual actor, a stream), then
headless Chromium draws `GET /` into docs/dashboard.png.

    cargo build --release && python3 scripts/dashboard_screenshot.py [--out docs/dashboard.png]
"""
import argparse, os, re, shutil, subprocess, sys, tempfile, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, "target", "release", "meshrpc")
TOKEN = "screenshot-token-1234"


def start(name, *extra):
    proc = subprocess.Popen([BIN, "node", "--name", name, "--listen", "127.0.0.1:0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # The node prints `listening on ADDR`, then `http on ADDR` with a gateway, on stdout.
    addr = http = None
    for line in proc.stdout:
        found = re.match(r"(listening|http) on (\S+)", line)
        if found and found.group(1) == "listening":
            addr = found.group(2)
        elif found:
            http = found.group(2)
        if addr and (http or "--http" not in extra):
            return proc, addr, http
    sys.exit(f"{name} did not start")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "dashboard.png"))
    opts = parser.parse_args()
    browser = shutil.which("chromium") or sys.exit("chromium is needed (apt-get install chromium)")
    procs = []
    try:
        n1, a1, http = start("n1", "--http", "127.0.0.1:0", "--http-token", TOKEN)
        procs.append(n1)
        if http is None:
            sys.exit("the gateway's address was not printed")
        for name in ("n2", "n3"):
            procs.append(start(name, "--seed", a1)[0])
        deadline = time.time() + 20
        while time.time() < deadline:
            out = subprocess.run([BIN, "members", a1], capture_output=True, text=True).stdout
            if out.count(" up") >= 3:
                break
            time.sleep(0.2)
        call = lambda *args: subprocess.run([BIN, "call", a1, *args], capture_output=True)
        for i in range(20):
            call("--actor", f"vcounter/user-{i % 4}", "incr", "1")
        call("count", "100")
        call("fanout", '"square"', "[7]")
        load = subprocess.Popen([BIN, "bench", a1, "--duration", "6", "--concurrency", "8"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)  # a script, not a test: let the rates build up under load
        profile = tempfile.mkdtemp(prefix="meshrpc-shot-")
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars",
                        "--window-size=1100,900", "--virtual-time-budget=2500",
                        f"--screenshot={opts.out}", f"http://meshrpc:{TOKEN}@{http}/"],
                       check=True, timeout=60, capture_output=True)
        shutil.rmtree(profile, ignore_errors=True)
        load.wait(timeout=30)
        print(f"wrote {opts.out}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
