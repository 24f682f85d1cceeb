"""How users start and stop Python peers: seeds that are not up yet, Ctrl-C and SIGTERM
leaving the cluster gracefully (members see `left` at once, not `down` later), `close`."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys

import pytest

import meshrpc
from conftest import PATIENCE, free_port, members_of, wait_for

# Each child puts Python's Ctrl-C handler back first: started from a background job (as
# `.ci/run &` is), a process inherits SIGINT ignored, and Python then installs no handler.
SERVER = """
import signal, sys, meshrpc
signal.signal(signal.SIGINT, signal.default_int_handler)

class MyServer:
    def add(self, a: int, b: int) -> int:
        return a + b

node = meshrpc.Node("pyserver", seeds=[sys.argv[1]])
node.register_instance(MyServer())
print(node.addr, flush=True)
node.serve_forever()
print("left", flush=True)
"""


CALLER = """
import signal, sys, meshrpc
signal.signal(signal.SIGINT, signal.default_int_handler)

proxy = meshrpc.ServerProxy(sys.argv[1], timeout=60)
try:
    print("calling", flush=True)
    proxy.sleep(30000)
    print("answered", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_interrupts_a_blocking_call(rust_nodes):
    r1 = rust_nodes("r1")
    caller = subprocess.Popen([sys.executable, "-c", CALLER, r1.addr], stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout.readline() == "calling\n"
        caller.send_signal(signal.SIGINT)
        # Well before the 30 s call or its 60 s timeout could end it.
        assert caller.wait(timeout=10) == 0
        assert caller.stdout.read() == "interrupted\n"
    finally:
        caller.kill()
        caller.wait()


def test_a_seed_that_is_not_up_yet_is_joined_when_it_comes_up(rust_nodes, py_nodes):
    port = free_port()
    node = py_nodes("py1", seeds=[f"127.0.0.1:{port}"])
    r1 = rust_nodes("r1", listen=f"127.0.0.1:{port}")
    wait_for("py1 to see r1 up", lambda: any(m.name == "r1" and m.status == "up" for m in node.members()))
    assert node.proxy("r1").square(3) == 9
    assert r1.addr == f"127.0.0.1:{port}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_forever_leaves_gracefully_on_ctrl_c_and_sigterm(bin_path, rust_nodes, sig):
    r1 = rust_nodes("r1")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, r1.addr], stdout=subprocess.PIPE, text=True
    )
    try:
        addr = server.stdout.readline().strip()
        assert addr.startswith("127.0.0.1:"), addr
        wait_for("r1 to see pyserver up", lambda: members_of(bin_path, r1.addr).get("pyserver") == "up")
        assert meshrpc.ServerProxy(addr).add(2, 3) == 5
        server.send_signal(sig)
        assert server.wait(timeout=PATIENCE) == 0
        assert server.stdout.read().strip() == "left"
        # Left, at once: not found down after the failure detector's timeout.
        # (a node killed would be found `down`, never `left`).
        wait_for("r1 to see pyserver left", lambda: members_of(bin_path, r1.addr).get("pyserver") == "left")
    finally:
        server.kill()
        server.wait()


def test_close_is_idempotent_and_ends_calls_to_the_node(py_nodes):
    node = py_nodes("py1")
    node.register_function(lambda: "pong", "ping")
    proxy = meshrpc.ServerProxy(node.addr, timeout=2)
    assert proxy.ping() == "pong"
    node.close()
    node.close()
    with pytest.raises(meshrpc.Fault) as raised:
        proxy.ping()
    assert raised.value.kind in ("peer_unavailable", "disconnected", "shutdown"), raised.value


_PROXY: meshrpc.ServerProxy | None = None


def _add_in_child(x: int) -> int:
    assert _PROXY is not None
    return _PROXY.add(x, 1)


def test_a_proxy_used_before_a_fork_works_in_the_children(rust_nodes):
    # multiprocessing's default on Linux: children inherit the parent's proxy, not its threads.
    global _PROXY
    r1 = rust_nodes("r1")
    _PROXY = meshrpc.ServerProxy(r1.addr)
    assert _PROXY.add(1, 1) == 2
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        assert pool.map_async(_add_in_child, range(6)).get(timeout=PATIENCE) == [1, 2, 3, 4, 5, 6]
    assert _PROXY.add(2, 2) == 4


def test_a_cluster_with_a_cookie_takes_python_peers_that_have_it(rust_nodes, py_nodes):
    r1 = rust_nodes("r1", "--cookie", "s3cret")
    node = py_nodes("py1", seeds=[r1.addr], cookie="s3cret")
    wait_for("py1 to see r1 up", lambda: any(m.name == "r1" and m.status == "up" for m in node.members()))
    assert node.proxy("r1").square(4) == 16
    assert meshrpc.ServerProxy(r1.addr, cookie="s3cret").add(1, 2) == 3
    with pytest.raises(meshrpc.Fault) as raised:
        meshrpc.ServerProxy(r1.addr).add(1, 2)
    assert raised.value.kind == "unauthenticated", raised.value
    with pytest.raises(meshrpc.Fault) as raised:
        meshrpc.ServerProxy(r1.addr, cookie="wrong").add(1, 2)
    assert raised.value.kind == "unauthenticated", raised.value
