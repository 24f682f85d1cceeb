"""Virtual actors hosted by Python: a class's instance holds one key's state; the cluster
places keys on Python hosts as on Rust ones, runs one call of a key at a time, and calls
reach them from Python, the CLI and Rust nodes alike."""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest

import meshrpc
from conftest import cli, wait_for


def host_counter(node: meshrpc.Node, kind: str = "pcounter"):
    @node.virtual_actor(kind)
    class Counter:
        """A count per key."""

        def __init__(self, key: str):
            self.key = key
            self.n = 0

        def incr(self, by: int) -> int:
            """Adds `by`; answers the count."""
            before = self.n
            self.n = before + by  # a read-modify-write: interleaved calls would lose counts
            return self.n

        def whoami(self) -> str:
            return self.key

        @staticmethod
        def not_a_method():
            return None

    return Counter


def test_a_python_host_serves_its_keys_one_call_at_a_time(bin_path, py_nodes):
    node = py_nodes("py1", workers=8)
    host_counter(node)
    counter = node.actor("pcounter", "k1")
    assert counter.whoami() == "k1"
    proxy = meshrpc.ServerProxy(node.addr)
    # Twenty calls at once on eight threads: every answer distinct, nothing lost.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = sorted(pool.map(lambda _: node.actor("pcounter", "k1").incr(1), range(20)))
    assert answers == list(range(1, 21))
    assert node.actor("pcounter", "k2").incr(5) == 5
    # The CLI reaches it too, with the method's declared signature.
    done = cli(bin_path, "call", node.addr, "pcounter.incr/k1", "1")
    assert done.stdout.strip() == "21", done.stderr
    done = cli(bin_path, "call", node.addr, "system.methodHelp", '"pcounter.incr"')
    assert json.loads(done.stdout) == "pcounter.incr(by: i64) -> i64\n\nAdds `by`; answers the count."
    methods = json.loads(cli(bin_path, "call", node.addr, "system.listMethods").stdout)
    assert {"pcounter.incr", "pcounter.whoami"} <= set(methods)
    assert "pcounter.not_a_method" not in methods
    with pytest.raises(meshrpc.Fault) as raised:
        proxy.pcounter.incr(1)
    assert raised.value.kind == "bad_arguments"


def test_keys_spread_over_python_hosts_and_are_reached_through_any_node(bin_path, rust_nodes, py_nodes):
    r1 = rust_nodes("r1")
    a = py_nodes("pa", seeds=[r1.addr])
    b = py_nodes("pb", seeds=[r1.addr])
    c = py_nodes("pc", seeds=[r1.addr])  # hosts nothing: it calls
    host_counter(a)
    host_counter(b)
    keys = [f"key-{i}" for i in range(12)]

    def owner(at: str, key: str):
        done = cli(bin_path, "call", at, "system.actors.owner", '"pcounter"', f'"{key}"')
        return json.loads(done.stdout) if done.returncode == 0 else None

    def settled():
        # Every node places every key on the same host, and the keys use both hosts: until
        # then (a host's type still spreading), two nodes may each activate a key.
        views = [[owner(at, key) for key in keys] for at in (r1.addr, a.addr, b.addr, c.addr)]
        return all(view == views[0] for view in views) and set(views[0]) == {"pa", "pb"}

    wait_for("every node to place pcounter's keys on pa and pb alike", settled)
    # Through a host (which forwards a key it does not own), the CLI, and a node hosting
    # nothing: one count per key, wherever it lives.
    for key in keys:
        done = cli(bin_path, "call", a.addr, f"pcounter.incr/{key}", "1")
        assert done.stdout.strip() == "1", done.stderr
        assert b.actor("pcounter", key).incr(1) == 2
        assert c.actor("pcounter", key).incr(1) == 3
        assert c.actor("pcounter", key).whoami() == key


def test_a_call_past_its_deadline_still_holds_its_key_until_python_answers(py_nodes):
    node = py_nodes("py1", timeout=0.2, workers=4)

    @node.virtual_actor("slowpoke")
    class Slowpoke:
        def __init__(self):
            self.inside = False

        def slow(self, ms: int) -> int:
            self.inside = True
            time.sleep(ms / 1000)
            self.inside = False
            return ms

        def busy(self) -> bool:
            return self.inside

    with pytest.raises(meshrpc.Fault) as raised:
        node.actor("slowpoke", "k").slow(600)
    assert raised.value.kind == "timeout"
    # The caller gave up; the key did not: its next call waits for `slow` to end.
    patient = meshrpc.ServerProxy(node.addr, timeout=10)
    assert getattr(patient, "slowpoke.busy/k")() is False


def test_a_class_that_cannot_make_an_instance_is_refused(py_nodes):
    node = py_nodes("py1")
    with pytest.raises(TypeError, match="must take the key, or nothing"):

        @node.virtual_actor("broken")
        class Broken:
            def __init__(self, a, b):
                pass

            def get(self) -> int:
                return 0
