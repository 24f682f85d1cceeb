"""meshrpc for Python: a Python program as a full peer of a meshrpc cluster.

The tutorial's server, as a node of the mesh::

    import meshrpc

    class MyServer:
        def add(self, a: int, b: int) -> int:
            return a + b

    node = meshrpc.Node("py1", listen="127.0.0.1:0", seeds=["127.0.0.1:4000"])
    node.register_instance(MyServer())
    node.serve_forever()

and its client, without a node::

    meshrpc.ServerProxy("mesh://127.0.0.1:4000").add(2, 3)

This package binds the Rust runtime (``meshrpc._native``): the node, its links and the
protocol are the runtime's own; this module reads type hints, runs handlers and makes the
proxies. Python handlers run on Python threads the node starts (``workers``), never on the
runtime's; ``async def`` handlers run on an asyncio loop of the node's own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
import types
import typing
from collections import namedtuple

from . import _native

__all__ = ["Fault", "Member", "Node", "ServerProxy"]

_log = logging.getLogger("meshrpc")


class Fault(Exception):
    """A call that failed: ``kind`` names the error (``method_not_found``, ``timeout``,
    ``bad_arguments``, ``application``, ...), ``message`` says what happened, and ``data``
    is the error's value when the callee gave one (for a Python handler's exception:
    ``{"type": "ValueError", "message": ...}``)."""

    def __init__(self, kind: str, message: str, data=None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.data = data


_native._set_fault(Fault)

Member = namedtuple("Member", "name addr status")
Member.__doc__ = """A member of the cluster: its name, address and status ("up", "suspect",
"down" or "left")."""


class Node:
    """A meshrpc node in this process: it serves the methods registered on it to the whole
    cluster, and calls members and virtual actors.

    ``seeds`` are ``host:port`` of members to join through (they need not be up yet);
    ``cookie`` is the cluster's shared secret, if it has one; ``timeout`` (seconds) bounds
    each call this node makes; ``workers`` Python threads run the handlers; ``http``
    (``"IP:PORT"``) starts the node's HTTP gateway, so ``xmlrpc.client`` and JSON-RPC
    clients reach its methods too (``http_token`` is the gateway's credential; a node with a
    cookie needs one).
    """

    def __init__(
        self,
        name: str,
        listen: str = "127.0.0.1:0",
        seeds: typing.Iterable[str] = (),
        cookie: str | None = None,
        *,
        timeout: float = 10.0,
        workers: int = 4,
        http: str | None = None,
        http_token: str | None = None,
    ):
        if workers < 1:
            raise ValueError("a node needs at least one worker thread")
        self._native = _native.NativeNode(
            name, listen, list(seeds), cookie, timeout, http, http_token
        )
        self._timeout = timeout
        self._handlers: list[typing.Callable | _ActorMethod] = []
        # Virtual actors' instances, by activation id.
        self._instances: dict[int, object] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [
            threading.Thread(target=self._serve_calls, name=f"meshrpc-{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        self.aio = _Aio(self)

    @property
    def addr(self) -> str:
        """The address it listens on, ``"127.0.0.1:PORT"`` with the port actually bound."""
        return self._native.addr

    @property
    def name(self) -> str:
        return self._native.name

    @property
    def http_addr(self) -> str | None:
        """Where its HTTP gateway listens (``Node(..., http="127.0.0.1:0")``), if it has one."""
        return self._native.http_addr

    def register_function(self, function: typing.Callable | None = None, name: str | None = None):
        """Serves ``function`` as ``name`` (its own name by default). Its type hints are the
        method's signature; its docstring is its help. Returns ``function``, so this also
        works as a decorator, with a name too (``@node.register_function(name="sum")``), as
        ``SimpleXMLRPCServer.register_function`` does."""
        if function is None:
            return lambda function: self.register_function(function, name)
        name = name or function.__name__
        params, result = _signature(function, name)
        doc = inspect.getdoc(function) or ""
        with self._lock:
            index = len(self._handlers)
            self._handlers.append(function)
        self._native.register(name, params, result, doc, index)
        return function

    def register_instance(self, instance) -> None:
        """Serves every public method of ``instance`` (those whose names do not start with
        ``_``), as ``SimpleXMLRPCServer.register_instance`` does."""
        for attr in dir(instance):
            if attr.startswith("_"):
                continue
            value = getattr(instance, attr)
            if callable(value):
                self.register_function(value, attr)

    def virtual_actor(self, kind: str):
        """A class decorator: this node hosts the virtual-actor type ``kind``, whose keys'
        state is an instance of the class, one per key, made at the key's first call here
        (``cls(key)`` if its constructor takes the key, else ``cls()``) and dropped when the
        activation ends. Its public methods are the type's; the cluster places each key on
        one host (Rust or Python) and runs one call of a key at a time::

            @node.virtual_actor("pcounter")
            class Counter:
                def __init__(self, key: str):
                    self.n = 0

                def incr(self, by: int) -> int:
                    self.n += by
                    return self.n
        """

        def host(cls):
            takes_key = _takes_key(cls)
            methods = []
            for attr in dir(cls):
                if attr.startswith("_") or not inspect.isfunction(inspect.getattr_static(cls, attr)):
                    continue
                function = getattr(cls, attr)
                params, result = _signature(function, f"{kind}.{attr}")
                doc = inspect.getdoc(function) or ""
                with self._lock:
                    index = len(self._handlers)
                    self._handlers.append(_ActorMethod(cls, attr, takes_key))
                methods.append((attr, params[1:], result, doc, index))  # less `self`
            self._native.virtual_actor(kind, methods)
            return cls

        return host

    def members(self) -> list[Member]:
        """Every member this node knows of, itself included."""
        return [Member(*m) for m in self._native.members()]

    def proxy(self, target: str) -> _Proxy:
        """The member ``target`` (its name, or ``host:port``): ``node.proxy("r2").square(5)``."""
        native, timeout = self._native, self._timeout
        return _Proxy(lambda method, args: native.call(target, method, args, timeout), target)

    def actor(self, kind: str, key: str) -> _Proxy:
        """The virtual actor ``kind``/``key``, wherever the cluster places it:
        ``node.actor("vcounter", "user-42").incr(1)``."""
        native, timeout = self._native, self._timeout
        return _Proxy(
            lambda method, args: native.call_actor(kind, key, method, args, timeout),
            f"{kind}/{key}",
        )

    def serve_forever(self) -> None:
        """Serves until Ctrl-C, SIGTERM or ``close()``; then leaves the cluster gracefully."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
        try:
            while not self._stopped.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            # `None`: the previous handler was not Python's, and cannot be put back from here.
            if main and previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        """Leaves the cluster (members see it ``left`` at once) and stops serving."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._native.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<meshrpc.Node {self.name} at {self.addr}>"

    def _serve_calls(self) -> None:
        native = self._native
        while not native.closed:
            call = native.next_call(0.5)
            if call is None:
                continue
            if call[0] == "forget":  # an activation of a virtual actor ended
                self._instances.pop(call[1], None)
                continue
            _, index, args, pending, actor = call
            try:
                handler = self._handlers[index]
                if actor is not None:
                    handler = self._method_of(handler, *actor)
                result = handler(*args)
                if inspect.isawaitable(result):  # `async def`, or anything returning one
                    self._await(result, pending)
                    continue
            except BaseException as error:  # the caller's `application` error, even for
                _fail(pending, error)  # SystemExit: the thread serves on
                continue
            _reply(pending, result)

    def _method_of(self, method: _ActorMethod, key: str, activation: int):
        """The bound method of the instance holding ``key``'s state in this activation."""
        with self._lock:  # two threads must not both make the key's first instance
            instance = self._instances.get(activation)
            if instance is None:
                cls = method.cls
                instance = cls(key) if method.takes_key else cls()
                self._instances[activation] = instance
        return getattr(instance, method.name)

    def _await(self, awaitable, pending) -> None:
        """Runs `awaitable` on the node's event loop; answers `pending` when it ends."""
        running = asyncio.run_coroutine_threadsafe(_awaited(awaitable), self._event_loop())

        def settle(done):
            if done.cancelled():
                pending.fail("CancelledError", "the node closed before the handler ended")
            elif done.exception() is not None:
                _fail(pending, done.exception())
            else:
                _reply(pending, done.result())

        running.add_done_callback(settle)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"meshrpc-{self.name}-asyncio", daemon=True
                )
                thread.start()
                self._loop = loop
            return self._loop


class _ActorMethod(typing.NamedTuple):
    """A method of a virtual-actor class, called on the instance of the key's activation."""

    cls: type
    name: str
    takes_key: bool


def _takes_key(cls) -> bool:
    """Whether ``cls(key)`` is how to make an instance (else ``cls()``)."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return False
    for args, takes_key in ((("key",), True), ((), False)):
        try:
            signature.bind(*args)
            return takes_key
        except TypeError:
            pass
    raise TypeError(f"{cls.__name__}() must take the key, or nothing, to make a key's instance")


async def _awaited(awaitable):
    return await awaitable


def _fail(pending, error: BaseException) -> None:
    try:
        message = str(error)
    except BaseException:
        message = "(its message could not be read)"
    pending.fail(type(error).__name__, message)


def _reply(pending, result) -> None:
    try:
        pending.reply(result)
    except Fault as error:  # the caller has been told; say it here too
        _log.warning("%s", error.message)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class _Method:
    """A method of a proxy; dotted names (``proxy.system.listMethods()``) build up."""

    def __init__(self, send, name: str):
        self._send = send
        self._name = name

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Method(self._send, f"{self._name}.{name}")

    def __call__(self, *args, **kwargs):
        if args and kwargs:
            raise TypeError(f"{self._name}: pass the arguments by position or by name, not both")
        return self._send(self._name, dict(kwargs) if kwargs else list(args))


class _Proxy:
    """A member or a virtual actor: its methods are attributes."""

    def __init__(self, send, label: str):
        self._send = send
        self._label = label

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Method(self._send, name)

    def __repr__(self) -> str:
        return f"<meshrpc proxy of {self._label}>"


class ServerProxy(_Proxy):
    """A connection to one node from a program that is not a node, like
    ``xmlrpc.client.ServerProxy``: ``ServerProxy("mesh://127.0.0.1:4000").add(2, 3)``.
    It connects on the first call, and again after the connection was lost."""

    def __init__(self, uri: str, cookie: str | None = None, *, timeout: float = 10.0):
        scheme, sep, rest = uri.partition("://")
        if not sep:
            scheme, rest = "mesh", uri
        if scheme != "mesh":
            raise ValueError(
                f"ServerProxy speaks mesh://HOST:PORT, not {scheme}://; for a node's HTTP "
                "gateway use xmlrpc.client.ServerProxy"
            )
        self._addr = rest.rstrip("/")
        self._cookie = cookie
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client = None
        self._pid = os.getpid()
        # `_send` is this class's method (not stored: a stored bound method would keep the
        # proxy, and its connection, alive until the garbage collector runs).
        self._label = f"mesh://{self._addr}"

    def _send(self, method: str, args):
        with self._lock:
            # A connection made before a fork belongs to the parent: the child makes its own.
            if self._client is None or self._pid != os.getpid() or not self._client.connected:
                self._client = _native.NativeClient(self._addr, self._cookie, self._timeout)
                self._pid = os.getpid()
            client = self._client
        return client.call(method, args, self._timeout)

    def close(self) -> None:
        with self._lock:
            self._client = None

    def __enter__(self) -> ServerProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<meshrpc.ServerProxy mesh://{self._addr}>"


class _Aio:
    """The node's calls for asyncio code: ``await node.aio.proxy("r2").square(5)``."""

    def __init__(self, node: Node):
        self._node = node

    def proxy(self, target: str) -> _Proxy:
        return _Proxy(lambda method, args: self._start(target, None, method, args), target)

    def actor(self, kind: str, key: str) -> _Proxy:
        return _Proxy(lambda method, args: self._start(kind, key, method, args), f"{kind}/{key}")

    def _start(self, target: str, key: str | None, method: str, args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(value, error):
            loop.call_soon_threadsafe(_settle, future, value, error)

        node = self._node
        node._native.call_then(target, key, method, args, node._timeout, done)
        return future


def _settle(future: asyncio.Future, value, error) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _signature(function, name: str) -> tuple[list[tuple[str, str]], str]:
    """The parameters (name, type) and result type of ``function``, as the runtime reads
    them: ``int``, ``list[str]``, ``Optional[bytes]``; ``any`` where there is no hint."""
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # hints that do not resolve: read them as written
        hints = {}
    params = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"`{name}` takes *{param.name}: a meshrpc method takes a fixed list of parameters"
            )
        if param.kind == param.KEYWORD_ONLY and param.default is not param.empty:
            continue  # not the caller's to give: the handler keeps its default
        if param.kind == param.KEYWORD_ONLY:
            raise TypeError(
                f"`{name}` takes `{param.name}` by keyword only: a meshrpc method's parameters "
                "can be given by position (callers may still name them)"
            )
        params.append((param.name, _type_text(hints.get(param.name, param.annotation), name)))
    result = _type_text(hints.get("return", signature.return_annotation), name)
    return params, result


def _type_text(hint, method: str) -> str:
    if hint is inspect.Parameter.empty or hint is typing.Any or hint is object:
        return "any"
    if isinstance(hint, str):  # a hint that did not resolve: the runtime reads the text
        return hint
    if hint is None or hint is type(None):
        return "None"
    if hint in (int, float, str, bytes, bool):
        return hint.__name__
    if hint is bytearray:
        return "bytes"
    if hint is list:
        return "list[any]"
    if hint is dict:
        return "dict[str, any]"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return f"Optional[{_type_text(rest[0], method)}]"
        raise TypeError(f"`{method}`: {hint} cannot travel; of unions, only Optional[T] can")
    if origin is list:
        return f"list[{_type_text(args[0], method) if args else 'any'}]"
    if origin is dict:
        key, value = args if args else (str, typing.Any)
        if key is not str:
            raise TypeError(f"`{method}`: {hint} cannot travel; dict keys must be str")
        return f"dict[str, {_type_text(value, method)}]"
    raise TypeError(
        f"`{method}`: {hint!r} is not a type meshrpc can carry (int, float, str, bytes, bool, "
        "None, list[T], dict[str, T], Optional[T], or leave it unannotated)"
    )
