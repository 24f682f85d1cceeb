"""The contract: a Python node serves the tutorial's class to the mesh (the CLI, Rust
callers, other Python programs), calls members by name and address, reaches virtual actors,
appears in the cluster's membership, and receives a Rust node's `fanout`."""

from __future__ import annotations

import json
import xmlrpc.client
from typing import Optional

import pytest

import meshrpc
from conftest import cli, members_of, wait_for


class MyServer:
    """The tutorial's class, unchanged but for its type hints."""

    def add(self, a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    def concat(self, parts: list[str], sep: Optional[str]) -> str:
        return (sep or "").join(parts)

    def echo(self, data: bytes) -> bytes:
        return data

    def anything(self, value):
        return value

    def small(self) -> list[int]:
        return [1, 2]

    def _private(self):
        return "never served"


def joined(node: meshrpc.Node, *names: str) -> None:
    wait_for(
        f"{node.name} to see {names} up",
        lambda: all(m.status == "up" for m in node.members() if m.name in names)
        and {m.name for m in node.members()} >= set(names),
    )


def test_the_tutorials_class_is_served_to_the_cli_rust_and_python(bin_path, py_nodes):
    node = py_nodes("py1")
    node.register_instance(MyServer())
    host, _, port = node.addr.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    # The CLI (JSON), by position and by name.
    done = cli(bin_path, "call", node.addr, "add", "2", "3")
    assert (done.returncode, done.stdout.strip()) == (0, "5"), done.stderr
    done = cli(bin_path, "call", node.addr, "add", "a=40", "b=2")
    assert done.stdout.strip() == "42", done.stderr
    # Introspection reads as a Rust method's: the signature from the hints, the docstring.
    done = cli(bin_path, "call", node.addr, "system.methodHelp", '"add"')
    assert json.loads(done.stdout) == "add(a: i64, b: i64) -> i64\n\nAdds two numbers."
    done = cli(bin_path, "call", node.addr, "system.listMethods")
    methods = json.loads(done.stdout)
    assert {"add", "concat", "echo", "anything", "small"} <= set(methods)
    assert "_private" not in methods
    # A typed Rust caller (bincode): `meshrpc bench` sends `add`'s arguments as Rust would.
    done = cli(bin_path, "bench", node.addr, "--calls", "2000", "--concurrency", "8", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert report["calls"] == 2000 and report["errors"] == {}, report
    # A Python program without a node.
    proxy = meshrpc.ServerProxy(f"mesh://{node.addr}")
    assert proxy.add(2, 3) == 5
    assert proxy.add(a=2, b=3) == 5
    assert proxy.concat(["a", "b"], "-") == "a-b"
    assert proxy.concat(["a", "b"], None) == "ab"
    # JSON carries bytes as numbers: the method's signature says they are bytes.
    assert proxy.echo(b"\x00\xff") == b"\x00\xff"
    assert proxy.echo(b"") == b""
    assert proxy.small() == [1, 2]
    assert proxy.anything({"k": [1, 2.5, None, True]}) == {"k": [1, 2.5, None, True]}
    assert proxy.system.listMethods() == methods


def test_a_python_node_joins_calls_members_by_name_and_receives_fanout(bin_path, rust_nodes, py_nodes):
    r1 = rust_nodes("r1")
    node = py_nodes("py1", seeds=[r1.addr])
    node.register_function(lambda a, b: a + b, "add")
    joined(node, "r1", "py1")
    statuses = {m.name: m.status for m in node.members()}
    assert statuses == {"r1": "up", "py1": "up"}
    addrs = {m.name: m.addr for m in node.members()}
    assert addrs == {"r1": r1.addr, "py1": node.addr}
    # By name and by address; the Rust demo's `square`.
    assert node.proxy("r1").square(5) == 25
    assert node.proxy(r1.addr).square(6) == 36
    assert node.proxy("r1").echo(b"\x01hi") == b"\x01hi"  # a Rust `ByteBuf` result
    # The Rust node sees the Python peer, and its fanout reaches it.
    wait_for("r1 to list py1", lambda: members_of(bin_path, r1.addr).get("py1") == "up")
    done = cli(bin_path, "call", r1.addr, "fanout", '"add"', "[1, 2]")
    assert json.loads(done.stdout) == {"py1": 3}, done.stderr


def test_virtual_actors_are_reached_wherever_they_live(rust_nodes, py_nodes):
    r1 = rust_nodes("r1")
    r2 = rust_nodes("r2", "--seed", r1.addr)
    node = py_nodes("py1", seeds=[r1.addr, r2.addr])
    joined(node, "r1", "r2", "py1")
    counter = node.actor("vcounter", "user-42")
    assert [counter.incr(1) for _ in range(3)] == [1, 2, 3]
    assert node.actor("vcounter", "user-43").incr(5) == 5
    assert counter.get() == 3


def test_register_function_decorates_with_or_without_a_name(py_nodes):
    node = py_nodes("py1")

    @node.register_function
    def double(x: int) -> int:
        return 2 * x

    @node.register_function(name="total")
    def sum_of(xs: list[int]) -> int:
        return sum(xs)

    proxy = meshrpc.ServerProxy(node.addr)
    assert double(4) == 8  # still the function
    assert proxy.double(4) == 8
    assert proxy.total([1, 2, 3]) == 6


def test_xmlrpc_clients_reach_a_python_nodes_methods_through_its_gateway(py_nodes):
    node = py_nodes("py1", http="127.0.0.1:0")
    node.register_instance(MyServer())
    assert node.http_addr.startswith("127.0.0.1:")
    server = xmlrpc.client.ServerProxy(f"http://{node.http_addr}")
    assert server.add(2, 3) == 5
    assert server.echo(xmlrpc.client.Binary(b"hi")) == xmlrpc.client.Binary(b"hi")
    assert server.system.methodHelp("add") == "add(a: i64, b: i64) -> i64\n\nAdds two numbers."
    assert py_nodes("py2").http_addr is None
    with pytest.raises(ValueError, match="http must be IP:PORT"):
        meshrpc.Node("py3", http="localhost")


def test_two_python_nodes_serve_each_other(rust_nodes, py_nodes):
    r1 = rust_nodes("r1")
    a = py_nodes("pa", seeds=[r1.addr])
    b = py_nodes("pb", seeds=[r1.addr])

    class Square:
        def square(self, x: int) -> int:
            return x * x

    class Cube:
        def cube(self, x: int) -> int:
            return x * x * x

    a.register_instance(Square())
    b.register_instance(Cube())
    joined(a, "r1", "pb")
    joined(b, "r1", "pa")
    assert a.proxy("pb").cube(3) == 27
    assert b.proxy("pa").square(4) == 16
