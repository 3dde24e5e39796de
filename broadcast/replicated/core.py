"""Replicated objects: a base class, the ``@replicated`` decorator, and the group that
dispatches committed calls to its objects.

How a call travels. ``counter.add(5)`` on a node's thread encodes the call
(:mod:`broadcast.replicated.encoding`), broadcasts it through the node, and waits.
When the call is committed, every replica's :class:`ReplicatedGroup` (the node's
state machine) decodes it at the same index and runs the method's body on its own
copy of the object; the caller's node hands back what the body returned there.

The rules that keep the replicas equal:

* an object's state changes only inside ``apply``, in the log's order: a replicated
  method's body runs only there, and setting an attribute of an attached object
  anywhere else raises :class:`~broadcast.replicated.errors.IllegalWrite`;
* bodies are deterministic: they depend on the object's state and the decoded
  arguments only (no clocks, no randomness, no iteration over a ``set`` of str);
* every replica registers the same objects under the same names, with the same
  bounds, before its node starts;
* a call that cannot be applied (garbage, unknown version, object or method, bad
  arguments) is refused with a typed error, the same on every replica.

Undecorated methods are local reads: they see this replica's state, which may
miss writes committed elsewhere (stale). A read that must see every write committed
before it started calls :meth:`Replicated.sync` first (ready-made objects take
``linearizable=True``): a barrier ordered through the log.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Generic,
    ParamSpec,
    TypeVar,
    overload,
)

from broadcast.errors import PayloadTooLarge
from broadcast.replicated import encoding
from broadcast.replicated.errors import (
    CallRefused,
    IllegalWrite,
    MalformedCall,
    NotAttached,
    ResultUnknown,
    StateError,
    UnknownMethod,
    UnknownObject,
)
from paxos.types import Delivery

if TYPE_CHECKING:
    from broadcast.node import Node

S = TypeVar("S", bound="Replicated")
P = ParamSpec("P")
R = TypeVar("R")

#: The version of the group's snapshot layout.
STATE_FORMAT = 1
#: Seconds a blocking call or sync waits for its commit by default.
DEFAULT_TIMEOUT_S = 30.0


class ReplicatedMethod(Generic[S, P, R]):
    """A ``@replicated`` method: on an instance, a :class:`BoundCall`."""

    def __init__(self, fn: Callable[Concatenate[S, P], R]) -> None:
        self.fn = fn
        self.name: str = fn.__name__
        self.signature = inspect.signature(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __set_name__(self, owner: type, name: str) -> None:
        encoding.check_name(name, "a replicated method's name")
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> ReplicatedMethod[S, P, R]: ...

    @overload
    def __get__(self, obj: S, owner: type | None = None) -> BoundCall[P, R]: ...

    def __get__(
        self, obj: S | None, owner: type | None = None
    ) -> ReplicatedMethod[S, P, R] | BoundCall[P, R]:
        if obj is None:
            return self
        return BoundCall(obj, self)


def replicated(fn: Callable[Concatenate[S, P], R]) -> ReplicatedMethod[S, P, R]:
    """Make a method of a :class:`Replicated` subclass a replicated command.

    Calling it on an attached object broadcasts the call and returns the body's
    result as applied at the call's index on this replica (raising what the body
    raised, or a :class:`~broadcast.replicated.errors.CallRefused`). The bound
    method also has ``.submit(...)`` (a ``concurrent.futures.Future``) and
    ``await .call_async(...)``. Arguments must be msgpack values; the body sees them
    decoded (tuples as lists). A method is named in the log by its name: renaming
    one is a format change, adding one is not.

    A blocking call waits ``group.timeout_s`` for its commit, then raises
    ``TimeoutError``: the call may still be applied later (exactly once). A call
    committed inside a snapshot this node installed while catching up raises
    :class:`~broadcast.replicated.errors.ResultUnknown` (its effect is in the state).
    """
    return ReplicatedMethod(fn)


class BoundCall(Generic[P, R]):
    """A replicated method of one object: call it, ``submit`` it or ``await call_async``."""

    __slots__ = ("_method", "_obj")

    def __init__(self, obj: Replicated, method: ReplicatedMethod[Any, P, R]) -> None:
        self._obj = obj
        self._method = method

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        obj = self._obj
        group = obj._repl_group
        if group is not None and group._applying_here():
            # Inside apply (a method calling another): run the body, in order, now.
            return self._method.fn(obj, *args, **kwargs)
        future = self.submit(*args, **kwargs)
        assert group is not None  # submit checked
        return future.result(group.timeout_s)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Broadcast the call; the future resolves to the body's result once applied here.

        Raises at once (nothing sent): ``TypeError`` for arguments that do not fit the
        signature or are not msgpack values, :class:`~broadcast.errors.PayloadTooLarge`,
        :class:`~broadcast.replicated.errors.NotAttached`.
        """
        obj = self._obj
        method = self._method
        node = obj._node()
        try:
            method.signature.bind(obj, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{obj._repl_name}.{method.name}(): {exc}") from None
        payload = encoding.encode_call(obj._repl_name, method.name, args, kwargs)
        group = obj._repl_group
        assert group is not None  # _node() checked
        return _results(_broadcast(node, payload), group)

    async def call_async(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await``-able call, for asyncio applications."""
        return await asyncio.wrap_future(self.submit(*args, **kwargs))


def _broadcast(node: Node, payload: bytes) -> concurrent.futures.Future[Any]:
    limit = node.max_payload_bytes
    if len(payload) > limit:
        raise PayloadTooLarge(len(payload), limit)
    return node.submit(payload)


def _results(
    inner: concurrent.futures.Future[Any], group: ReplicatedGroup
) -> concurrent.futures.Future[Any]:
    """A future of the apply result of ``inner``'s broadcast (its ``.result``), or
    :class:`ResultUnknown` if this replica skipped its apply by installing a snapshot
    (the node then answers None, which a method may also return)."""
    outer: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def done(f: concurrent.futures.Future[Any]) -> None:
        if f.cancelled():
            outer.cancel()
            return
        exc = f.exception()
        if exc is not None:
            outer.set_exception(exc)
            return
        committed = f.result()
        if group._skipped(committed.index):
            outer.set_exception(ResultUnknown(committed.index))
        else:
            outer.set_result(committed.result)

    inner.add_done_callback(done)
    return outer


class Replicated:
    """Base class of replicated objects.

    Subclasses keep their state in attributes set in ``__init__`` (the initial state,
    the same on every replica) and change it only in ``@replicated`` methods. Other
    methods are local reads of this replica's state (stale: they may miss writes
    committed elsewhere); :meth:`sync` first makes them linearizable.

    Snapshots: :meth:`dump_state` / :meth:`load_state` give the state as a msgpack
    value. The defaults take the instance's attributes, which must then be msgpack
    values (a ``set`` is not); override both for anything else, and bump
    ``state_version`` when the layout changes (``load_state`` gets the version the
    state was written with). ``type_name`` (default: the class name) is recorded
    with the state and checked on restore.
    """

    type_name: ClassVar[str] = "Replicated"
    state_version: ClassVar[int] = 1
    _replicated_methods: ClassVar[dict[str, ReplicatedMethod[Any, Any, Any]]] = {}

    _repl_group: ReplicatedGroup | None = None
    _repl_name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__
        methods: dict[str, ReplicatedMethod[Any, Any, Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, ReplicatedMethod):
                    methods[name] = value
                elif name in methods:
                    del methods[name]  # overridden by a plain attribute
        cls._replicated_methods = methods

    def __setattr__(self, name: str, value: Any) -> None:
        group = self._repl_group
        if group is not None and not group._writable_here():
            raise IllegalWrite(
                f"{type(self).__name__}.{name} set outside apply: only @replicated methods "
                "may change a replicated object's state"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        group = self._repl_group
        if group is not None and not group._writable_here():
            raise IllegalWrite(f"{type(self).__name__}.{name} deleted outside apply")
        object.__delattr__(self, name)

    # ------------------------------------------------------------------ reads

    @property
    def name(self) -> str:
        """The name this object is registered under ("" if it is not)."""
        return self._repl_name

    def sync(self, timeout: float | None = None) -> int:
        """A read barrier: wait until every write committed before this call began is
        applied on this replica; returns the barrier's index in the log.

        Local reads made after it are linearizable (they see at least that state).
        """
        node = self._node()
        group = self._repl_group
        assert group is not None
        future = _broadcast(node, encoding.encode_barrier(self._repl_name))
        index: int = future.result(group.timeout_s if timeout is None else timeout).index
        return index

    @contextlib.contextmanager
    def _reading(self, linearizable: bool) -> Iterator[None]:
        """Hold the group's lock for one consistent local read, after a barrier if
        ``linearizable``. Unattached, it reads the object as it is."""
        if linearizable:
            self.sync()
        group = self._repl_group
        if group is None:
            yield
            return
        with group._lock:
            yield

    def _node(self) -> Node:
        group = self._repl_group
        if group is None:
            raise NotAttached(f"{type(self).__name__} is in no ReplicatedGroup")
        node = group.node
        if node is None:
            raise NotAttached(f"the group of {self._repl_name!r} is attached to no node")
        group._check_not_loop_thread()
        return node

    # ------------------------------------------------------------------ state

    def dump_state(self) -> Any:
        """The state as a msgpack value (default: the instance's attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_repl_")}

    def load_state(self, version: int, state: Any) -> None:
        """Replace the state with one :meth:`dump_state` returned (at ``version``)."""
        if version != self.state_version or not isinstance(state, dict):
            raise StateError(f"{type(self).__name__} cannot load state version {version}")
        for key in [k for k in vars(self) if not k.startswith("_repl_")]:
            object.__delattr__(self, key)
        for key, value in state.items():
            object.__setattr__(self, key, value)


class ReplicatedGroup:
    """The node's state machine: named replicated objects, one log.

    Register every object (``ReplicatedGroup(counter=ReplCounter())`` or
    :meth:`add`) before the node starts, the same on every replica; give the group
    to the node as its ``state_machine``, then :meth:`attach` the node::

        group = ReplicatedGroup(hits=ReplCounter(), users=ReplDict(max_bytes=1 << 20))
        node = Node(1, cluster, "data/node1", state_machine=group)
        group.attach(node.start())
        group["hits"].add(1)  # or keep a reference to the object

    Payloads that are not replicated calls (other broadcasts on the same cluster)
    are ignored. :meth:`snapshot` / :meth:`restore` cover every object, so the node
    compacts its log and a new node installs the state.
    """

    def __init__(
        self,
        objects: Mapping[str, Replicated] | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        **named: Replicated,
    ) -> None:
        self.objects: dict[str, Replicated] = {}
        self.node: Node | None = None
        #: Seconds blocking calls and ``sync`` wait for a commit.
        self.timeout_s = timeout_s
        #: The index of the last delivery applied (or restored) here.
        self.applied_index = 0
        self._lock = threading.RLock()
        self._writer: int | None = None  # the thread applying or restoring, while it does
        self._loop: int | None = None  # the node's loop thread, once it applied something
        self._started = False
        self._initial: dict[str, bytes] = {}
        # (after, through): indexes a restore jumped over, never applied here (newest 64).
        self._jumps: collections.deque[tuple[int, int]] = collections.deque(maxlen=64)
        for name, obj in {**(objects or {}), **named}.items():
            self.add(name, obj)

    def add(self, name: str, obj: S) -> S:
        """Register ``obj`` under ``name``; returns ``obj``. Only before the first apply."""
        encoding.check_name(name, "an object name")
        if self._started:
            raise RuntimeError("objects are added before the group applies or restores")
        if name in self.objects:
            raise ValueError(f"an object is already registered as {name!r}")
        if obj._repl_group is not None:
            raise ValueError(f"{type(obj).__name__} is already registered as {obj._repl_name!r}")
        # The initial state, kept packed: restoring a snapshot without this object (one
        # taken before it was added to the code) starts it afresh. Packing it now also
        # checks, once, that its state is made of msgpack values.
        self._initial[name] = encoding.pack(obj.dump_state(), f"the state of {name!r}")
        object.__setattr__(obj, "_repl_name", name)
        object.__setattr__(obj, "_repl_group", self)
        self.objects[name] = obj
        return obj

    def __getitem__(self, name: str) -> Replicated:
        return self.objects[name]

    def attach(self, node: Node) -> ReplicatedGroup:
        """Send this group's calls through ``node``, whose state machine it must be."""
        if node.state_machine is not self:
            raise ValueError("the node's state_machine is not this group")
        self.node = node
        return self

    def sync(self, timeout: float | None = None) -> int:
        """A read barrier for the whole group (see :meth:`Replicated.sync`)."""
        if self.node is None:
            raise NotAttached("the group is attached to no node")
        self._check_not_loop_thread()
        future = _broadcast(self.node, encoding.encode_barrier(""))
        index: int = future.result(self.timeout_s if timeout is None else timeout).index
        return index

    # ------------------------------------------------------------------ state machine

    def apply(self, delivery: Delivery) -> Any:
        """Apply one committed payload: a call's result (or its typed error), the index
        for a barrier, None for a payload that is not a call."""
        with self._lock:
            self._started = True
            self._loop = self._writer = me = threading.get_ident()
            try:
                self.applied_index = delivery.index
                payload = delivery.command.payload
                if not encoding.is_call(payload):
                    return None
                return self._dispatch(delivery.index, payload)
            finally:
                assert self._writer == me
                self._writer = None

    def _dispatch(self, index: int, payload: bytes) -> Any:
        try:
            call = encoding.decode_call(payload)
        except CallRefused as exc:
            return exc
        if call.method == encoding.BARRIER:
            if call.obj and call.obj not in self.objects:
                return UnknownObject(call.obj)
            return index
        obj = self.objects.get(call.obj)
        if obj is None:
            return UnknownObject(call.obj)
        method = type(obj)._replicated_methods.get(call.method)
        if method is None:
            return UnknownMethod(call.obj, call.method)
        try:
            method.signature.bind(obj, *call.args, **call.kwargs)
        except TypeError as exc:
            return MalformedCall(f"{call.obj}.{call.method}(): {exc}")
        try:
            return method.fn(obj, *call.args, **call.kwargs)
        except Exception as exc:
            # A deterministic body fails alike everywhere: the failure is the result.
            return exc

    def snapshot(self) -> bytes:
        """Every object's state, versioned, in one msgpack blob."""
        with self._lock:
            states = [
                [name, obj.type_name, obj.state_version, obj.dump_state()]
                for name, obj in self.objects.items()
            ]
            return encoding.pack([STATE_FORMAT, self.applied_index, states], "a snapshot")

    def restore(self, data: bytes) -> None:
        """Replace every object's state with a :meth:`snapshot`'s.

        Raises :class:`~broadcast.replicated.errors.StateError` for a blob this group
        cannot load (garbage, unknown format, an object it does not register, a type
        that differs): the replica must not go on with a state that is not the others'.
        Objects the blob does not hold (added to the code since) start afresh.
        """
        try:
            fields = encoding.unpack(data)
        except Exception as exc:
            raise StateError(f"snapshot is not msgpack ({type(exc).__name__})") from None
        if not isinstance(fields, list) or not fields or fields[0] != STATE_FORMAT:
            version = fields[0] if isinstance(fields, list) and fields else None
            raise StateError(f"snapshot format {version!r} is not supported")
        if len(fields) != 3 or type(fields[1]) is not int or type(fields[2]) is not list:
            raise StateError("snapshot layout is not format 1's")
        _, applied, states = fields
        loads: dict[str, tuple[int, Any]] = {}
        for entry in states:
            if not (isinstance(entry, list) and len(entry) == 4):
                raise StateError("snapshot entry is not [name, type, version, state]")
            name, type_name, version, state = entry
            obj = self.objects.get(name) if type(name) is str else None
            if obj is None:
                raise StateError(f"snapshot holds {name!r}, which this group does not register")
            if type_name != obj.type_name or type(version) is not int:
                raise StateError(f"snapshot holds {name!r} as {type_name!r}, not {obj.type_name}")
            loads[name] = (version, state)
        with self._lock:
            self._started = True
            self._writer = me = threading.get_ident()
            try:
                for name, obj in self.objects.items():
                    if name in loads:
                        obj.load_state(*loads[name])
                    else:
                        obj.load_state(obj.state_version, encoding.unpack(self._initial[name]))
                if applied > self.applied_index:
                    self._jumps.append((self.applied_index, applied))
                self.applied_index = applied
            finally:
                assert self._writer == me
                self._writer = None

    # ------------------------------------------------------------------ threads

    def _skipped(self, index: int) -> bool:
        """Whether a restore jumped over ``index`` (its apply never ran here)."""
        return any(after < index <= through for after, through in self._jumps)

    def _applying_here(self) -> bool:
        return self._writer is not None and self._writer == threading.get_ident()

    def _writable_here(self) -> bool:
        return self._applying_here()

    def _check_not_loop_thread(self) -> None:
        """A call from the node's loop thread (a delivery callback) would wait for that
        very thread: refuse it rather than hang."""
        if self._loop is not None and self._loop == threading.get_ident():
            raise RuntimeError(
                "replicated calls and sync() cannot be made from the node's loop thread "
                "(a delivery callback): they would wait for it"
            )
