"""What the tests share: the real `meshrpc` binary (built by `cargo build`; `MESHRPC_BIN`
names another), Rust nodes started as processes and always killed, Python nodes always
closed, and waiting on a condition with a deadline instead of sleeping."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import socket
import subprocess
import sys
import threading
import time

import pytest

import meshrpc

REPO = pathlib.Path(__file__).resolve().parents[2]
PATIENCE = 20.0


def _binary() -> str | None:
    named = os.environ.get("MESHRPC_BIN")
    if named:
        return named
    for profile in ("debug", "release"):
        candidate = REPO / "target" / profile / "meshrpc"
        if candidate.exists():
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def bin_path() -> str:
    found = _binary()
    if found is None:
        pytest.skip("no meshrpc binary: run `cargo build` first, or set MESHRPC_BIN")
    return found


def wait_for(what: str, condition, timeout: float = PATIENCE):
    """Polls `condition` until it returns something truthy; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RustNode:
    """`meshrpc node --name NAME --listen LISTEN EXTRA...`, its address read from its
    `listening on` line."""

    def __init__(self, bin_path: str, name: str, listen: str, extra: list[str]):
        self.name = name
        self.process = subprocess.Popen(
            [bin_path, "node", "--name", name, "--listen", listen, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "RUST_LOG": "error"},
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True).start()
        try:
            line = lines.get(timeout=PATIENCE)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"{name} did not print its address")
        assert line.startswith("listening on "), line
        self.addr = line.split()[-1]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=PATIENCE)


@pytest.fixture
def rust_nodes(bin_path):
    """Starts Rust nodes: `rust_nodes("r1", "--seed", addr)`; kills them all afterwards."""
    started: list[RustNode] = []

    def start(name: str, *extra: str, listen: str = "127.0.0.1:0") -> RustNode:
        node = RustNode(bin_path, name, listen, list(extra))
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture
def py_nodes():
    """Starts Python nodes in this process; closes them all afterwards."""
    started: list[meshrpc.Node] = []

    def start(*args, **kwargs) -> meshrpc.Node:
        node = meshrpc.Node(*args, **kwargs)
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()


def cli(bin_path: str, *args: str) -> subprocess.CompletedProcess:
    """Runs `meshrpc ARGS...` to completion."""
    return subprocess.run(
        [bin_path, *args],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        env={**os.environ, "RUST_LOG": "error"},
    )


def members_of(bin_path: str, addr: str) -> dict[str, str]:
    """A node's view of the cluster, through `meshrpc members --json`: name → status."""
    done = cli(bin_path, "members", "--json", addr)
    if done.returncode != 0:
        return {}
    return {m["name"]: m["status"] for m in json.loads(done.stdout)}


def python_script(code: str) -> list[str]:
    """The command that runs `code` with this interpreter."""
    return [sys.executable, "-c", code]
