"""asyncio: `async def` handlers run on the node's own event loop, concurrently; asyncio
code awaits calls through `node.aio` without blocking its loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time

import pytest

import meshrpc
from conftest import wait_for


def test_async_handlers_run_concurrently_on_an_event_loop(py_nodes):
    # One worker thread: were the handlers run on it, the first would block the second.
    node = py_nodes("py1", workers=1)
    waiting = threading.Event()
    gate = asyncio.Event()

    async def wait_then(x: int) -> int:
        waiting.set()
        await asyncio.wait_for(gate.wait(), timeout=10)
        return x * 2

    async def open_gate() -> None:
        gate.set()

    node.register_function(wait_then)
    node.register_function(open_gate)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(meshrpc.ServerProxy(node.addr).wait_then, 21)
        wait_for("wait_then to wait", waiting.is_set)
        assert meshrpc.ServerProxy(node.addr).open_gate() is None
        assert first.result(timeout=10) == 42


def test_anything_that_returns_an_awaitable_is_awaited(py_nodes):
    node = py_nodes("py1")

    class Doubler:
        async def __call__(self, x: int) -> int:
            await asyncio.sleep(0)
            return x * 2

    async def scaled(x: int, by: int) -> int:
        return x * by

    node.register_function(Doubler(), "double")
    node.register_function(functools.partial(scaled, by=3), "triple")
    proxy = meshrpc.ServerProxy(node.addr)
    assert proxy.double(21) == 42
    assert proxy.triple(5) == 15


def test_asyncio_code_awaits_members_and_actors_without_blocking_its_loop(rust_nodes, py_nodes):
    r1 = rust_nodes("r1")
    node = py_nodes("py1", seeds=[r1.addr])
    wait_for("r1 up", lambda: any(m.name == "r1" and m.status == "up" for m in node.members()))

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.ensure_future(tick())
        squares = await asyncio.gather(*(node.aio.proxy("r1").square(i) for i in range(50)))
        slept = await node.aio.proxy("r1").sleep(200)
        counted = await node.aio.actor("vcounter", "aio").incr(2)
        with pytest.raises(meshrpc.Fault) as raised:
            await node.aio.proxy("r1").nope()
        ticker.cancel()
        return squares, slept, counted, raised.value.kind, ticks

    started = time.monotonic()
    squares, slept, counted, kind, ticks = asyncio.run(main())
    assert squares == [i * i for i in range(50)]
    assert counted == 2
    assert kind == "method_not_found"
    # The loop kept running while `sleep(200)` was awaited.
    assert ticks >= 20, ticks
    assert slept == 200
    assert time.monotonic() - started < 10
