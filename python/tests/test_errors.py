"""Errors both ways, and bad input: every failed call raises `meshrpc.Fault` with the error's
kind; a handler's exception reaches its caller as `application` with the exception's type;
what cannot travel is refused with a clear error, and the node keeps serving."""

from __future__ import annotations

import json

import pytest

import meshrpc
from conftest import cli


class Calc:
    def add(self, a: int, b: int) -> int:
        return a + b

    def div(self, a: float, b: float) -> float:
        return a / b

    def lie(self) -> int:
        return "not a number"

    def unsendable(self):
        return {1, 2, 3}


def test_a_handlers_exception_reaches_the_caller_with_its_type(py_nodes):
    node = py_nodes("py1")
    node.register_instance(Calc())
    proxy = meshrpc.ServerProxy(node.addr)
    with pytest.raises(meshrpc.Fault) as raised:
        proxy.div(1, 0)
    fault = raised.value
    assert fault.kind == "application"
    assert fault.message == "ZeroDivisionError: float division by zero"
    assert fault.data == {"type": "ZeroDivisionError", "message": "float division by zero"}
    assert proxy.div(1, 4) == 0.25


def test_calls_that_fail_raise_fault_with_their_kind(bin_path, py_nodes):
    node = py_nodes("py1", timeout=0.5)
    node.register_instance(Calc())
    proxy = meshrpc.ServerProxy(node.addr)
    with pytest.raises(meshrpc.Fault) as raised:
        proxy.nope()
    assert raised.value.kind == "method_not_found"
    assert raised.value.message == "method `nope` not found"
    with pytest.raises(meshrpc.Fault) as raised:
        proxy.add(1, "two")
    assert raised.value.kind == "bad_arguments"
    assert raised.value.message == 'argument `b` of `add`: expected i64, got "two"'
    with pytest.raises(meshrpc.Fault) as raised:
        proxy.add(1)
    assert raised.value.message == "`add` takes 2 arguments (a: i64, b: i64), got 1"
    # The CLI says the same, and exits 1.
    done = cli(bin_path, "call", node.addr, "add", "1", '"two"')
    assert done.returncode == 1
    assert "bad_arguments" in done.stderr and "expected i64" in done.stderr, done.stderr
    # Nobody listening.
    with pytest.raises(meshrpc.Fault) as raised:
        meshrpc.ServerProxy("mesh://127.0.0.1:1").add(1, 2)
    assert raised.value.kind == "peer_unavailable"
    with pytest.raises(meshrpc.Fault) as raised:
        node.proxy("no-such-member").add(1, 2)
    assert raised.value.kind == "peer_unavailable"


def test_a_result_that_cannot_travel_is_the_callers_error_and_the_node_keeps_serving(py_nodes, caplog):
    node = py_nodes("py1")
    node.register_instance(Calc())
    proxy = meshrpc.ServerProxy(node.addr)
    with pytest.raises(meshrpc.Fault) as raised:
        proxy.unsendable()
    assert raised.value.kind == "application"
    assert "a value of type set cannot travel" in raised.value.message
    with pytest.raises(meshrpc.Fault) as raised:
        proxy.lie()
    assert raised.value.message == (
        '`lie` returned str "not a number", which is not its declared result type int'
    )
    assert proxy.add(2, 3) == 5
    # The node's log says it too.
    assert "the handler's result cannot be sent" in caplog.text


def test_a_handler_that_raises_anything_is_an_error_and_its_thread_serves_on(py_nodes):
    node = py_nodes("py1", workers=1)

    def leave():
        raise SystemExit(3)

    def interrupted():
        raise KeyboardInterrupt

    node.register_function(leave)
    node.register_function(interrupted)
    node.register_function(lambda: "pong", "ping")
    proxy = meshrpc.ServerProxy(node.addr)
    for method, kind in ((proxy.leave, "SystemExit"), (proxy.interrupted, "KeyboardInterrupt")):
        with pytest.raises(meshrpc.Fault) as raised:
            method()
        assert raised.value.kind == "application"
        assert raised.value.data["type"] == kind
    # One worker thread, still there.
    assert proxy.ping() == "pong"


def test_what_cannot_be_declared_or_sent_is_refused_before_anything_travels(py_nodes):
    node = py_nodes("py1")

    def takes_a_set(s: set[int]) -> int:
        return len(s)

    with pytest.raises(TypeError, match="set\\[int\\] is not a type meshrpc can carry"):
        node.register_function(takes_a_set)

    def star(*args):
        return args

    with pytest.raises(TypeError, match="takes \\*args"):
        node.register_function(star)

    def int_keys(d: dict[int, str]) -> int:
        return len(d)

    with pytest.raises(TypeError, match="dict keys must be str"):
        node.register_function(int_keys)

    def keyword_only(a: int, *, b: int) -> int:
        return a + b

    with pytest.raises(TypeError, match="`b` by keyword only"):
        node.register_function(keyword_only)

    def nothing_list(xs: list[None]) -> int:
        return len(xs)

    with pytest.raises(ValueError, match="carries nothing"):
        node.register_function(nothing_list)
    node.register_function(lambda x: x, "identity")
    proxy = meshrpc.ServerProxy(node.addr)
    with pytest.raises(TypeError, match='a value of type object cannot travel .at argument 1\\[0\\]\\["k"\\]'):
        proxy.identity([{"k": object()}])
    looped: list = []
    looped.append(looped)
    with pytest.raises(TypeError, match="does it contain itself"):
        proxy.identity(looped)
    with pytest.raises(OverflowError):
        proxy.identity(1 << 200)
    with pytest.raises(ValueError, match="mesh://"):
        meshrpc.ServerProxy("http://127.0.0.1:8000")
    with pytest.raises(TypeError, match="by position or by name"):
        proxy.identity(1, x=2)
    assert proxy.identity({"fine": [1, 2]}) == {"fine": [1, 2]}


def test_a_node_that_cannot_start_says_why(py_nodes):
    node = py_nodes("py1")
    with pytest.raises(RuntimeError, match=node.addr.split(":")[-1]):
        meshrpc.Node("py2", listen=node.addr)
    with pytest.raises(ValueError, match="timeout must be positive"):
        meshrpc.Node("py3", timeout=0)
