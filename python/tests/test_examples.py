"""examples/python/: the tutorial's programs, ported with the fewest changes, run as users
run them (on a free port instead of 8000, so a busy port does not fail the test)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import meshrpc
from conftest import PATIENCE, REPO, free_port, wait_for

EXAMPLES = REPO / "examples" / "python"


def run_pair(tmp_path: pathlib.Path, server: str, client: str) -> str:
    port = str(free_port())
    for name in (server, client):
        text = (EXAMPLES / name).read_text().replace("8000", port)
        (tmp_path / name).write_text(text)
    process = subprocess.Popen([sys.executable, str(tmp_path / server)])
    try:
        def answers():
            try:
                return meshrpc.ServerProxy(f"localhost:{port}", timeout=1).system.listMethods()
            except meshrpc.Fault:
                return None

        wait_for("the server to serve", answers)
        done = subprocess.run(
            [sys.executable, str(tmp_path / client)], capture_output=True, text=True, timeout=PATIENCE
        )
        assert done.returncode == 0, done.stderr
        return done.stdout
    finally:
        process.kill()
        process.wait()


def test_the_tutorials_server_and_client(tmp_path):
    assert run_pair(tmp_path, "server.py", "client.py") == "5\n"


def test_the_tutorials_two_instances(tmp_path):
    output = run_pair(tmp_path, "square_cube_server.py", "square_cube_client.py")
    assert output == "The square of 5 is: 25\nThe cube of 3 is: 27\n"


def test_the_peer_example_joins_a_rust_node(tmp_path, rust_nodes):
    r1 = rust_nodes("r1")
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "peer.py"), r1.addr], stdout=subprocess.PIPE, text=True
    )
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        assert lines[1] == "square(5) on r1: 25\n", lines
        assert lines[2] == "vcounter/user-42: 1\n", lines
        assert lines[3].startswith("serving area() at 127.0.0.1:"), lines
        addr = lines[3].split()[3]
        assert meshrpc.ServerProxy(addr).area(2.5, 4) == 10.0
    finally:
        process.kill()
        process.wait()
